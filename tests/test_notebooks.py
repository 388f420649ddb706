"""The notebooks run end to end (small, on the CPU): their code cells are executed in order."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, smollm2_checkpoint, monkeypatch, capsys):
    monkeypatch.setenv("PCOMP_CKPT", str(smollm2_checkpoint))
    monkeypatch.setenv("PCOMP_TOKENS", "2000")  # four of SmolLM2's 512-token preset chunks, two kept
    cells = json.loads(path.read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    exec(compile(source, str(path), "exec"), {"__name__": "__notebook__"})
    out = capsys.readouterr().out
    assert re.search(r"^parallelcomp:.*\| correct: True$", out, re.MULTILINE), out  # not only the truncate line
