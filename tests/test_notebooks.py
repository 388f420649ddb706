"""The notebooks run end to end (small, on the CPU): their code cells are executed in order, in one namespace, as a
fresh kernel would run them; any cell error fails the test. Each notebook must also print its key result."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
ROOT = Path(__file__).parent.parent

# a line each notebook prints when its main result is right (not only that it ran)
EXPECT = {
    "01_quickstart.ipynb": r"^parallelcomp:.*\| correct: True$",  # the needle found (not the truncate line)
    "02_attention_biases.ipynb": r"^parallelcomp:.*\| correct: True$",
    "03_speed_memory.ipynb": r"^ *\d+K +parallelcomp +\d",  # the live run's parallelcomp row, read back from its JSON
}


def test_every_notebook_has_an_expectation():
    assert sorted(p.name for p in NOTEBOOKS) == sorted(EXPECT)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, smollm2_checkpoint, monkeypatch, capsys):
    monkeypatch.setenv("PCOMP_CKPT", str(smollm2_checkpoint))
    monkeypatch.setenv("PCOMP_TOKENS", "2000")  # four of SmolLM2's 512-token preset chunks, two kept
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(ROOT)  # as notebooks/execute.py runs them: paths relative to the repository root
    cells = json.loads(path.read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    exec(compile(source, str(path), "exec"), {"__name__": "__notebook__"})
    out = capsys.readouterr().out
    assert re.search(EXPECT[path.name], out, re.MULTILINE), out


def test_committed_notebooks_carry_outputs():
    """What a visitor sees on the code host: every code cell that ran has its outputs, in order, with no errors."""
    for path in NOTEBOOKS:
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        counts = [c["execution_count"] for c in cells if c["execution_count"] is not None]
        assert counts == list(range(1, len(counts) + 1)) and len(counts) >= len(cells) - 1, (path.name, counts)
        assert not any(o.get("output_type") == "error" for c in cells for o in c["outputs"]), path.name
        images = sum("image/png" in o.get("data", {}) for c in cells for o in c["outputs"])
        assert images >= 1, f"{path.name}: no plot in the committed outputs"
