"""`python -m pcomp_jax generate`: output formats and one-line errors for user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pcomp_jax.cli import main


def test_generate_json_has_text_and_tokens(tiny_checkpoint, capsys):
    ckpt, _ = tiny_checkpoint
    assert main(["generate", "--ckpt", str(ckpt), "--prompt", "The capital", "--max-new-tokens", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out["text"], str) and len(out["tokens"]) == 5


def test_generate_plain_text(tiny_checkpoint, capsys):
    ckpt, _ = tiny_checkpoint
    assert main(["generate", "--ckpt", str(ckpt), "--prompt", "The capital", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.strip() != ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ckpt", "/nonexistent/dir", "--prompt", "hi"], "not a pcomp-jax checkpoint"),
        (["--prompt", ""], "prompt is empty"),
        (["--prompt", "hi", "--chat"], "no chat template"),
        (["--prompt", "hi", "--temperature", "-1"], "temperature must be >= 0"),
    ],
)
def test_user_mistakes_are_one_line_errors(tiny_checkpoint, capsys, args, message):
    ckpt, _ = tiny_checkpoint
    argv = ["generate", "--ckpt", str(ckpt), *args] if "--ckpt" not in args else ["generate", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_bad_flag_value_is_rejected_by_argparse(tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    proc = subprocess.run(
        [sys.executable, "-m", "pcomp_jax", "generate", "--ckpt", str(ckpt), "--prompt", "x", "--max-new-tokens", "0"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "must be >= 1" in proc.stderr and "Traceback" not in proc.stderr
