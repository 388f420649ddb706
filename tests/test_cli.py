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
        (["--prompt", "hi", "--temperature", "-1"], "temperature must be a finite number >= 0"),
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


CONTEXT = "The quick brown fox jumps over the lazy dog. " * 10


def _long(ckpt, *extra):
    return [
        "generate",
        "--ckpt",
        str(ckpt),
        "--question",
        "What jumps?",
        "--chunk-tokens",
        "128",
        "--max-new-tokens",
        "4",
        *extra,
    ]


def test_context_file_json_has_stats(tiny_checkpoint, tmp_path, capsys):
    ckpt, _ = tiny_checkpoint
    f = tmp_path / "ctx.txt"
    f.write_text(CONTEXT)
    assert main(_long(ckpt, "--context-file", str(f), "--keep-chunks", "2", "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    stats = out["stats"]
    assert stats["method"] == "parallelcomp" and stats["num_chunks"] >= 3 and len(stats["kept_chunks"]) == 2
    for key in ("chunk_scores", "cache_tokens_per_layer", "prefill_seconds", "decode_seconds"):
        assert key in stats
    assert 1 <= len(out["tokens"]) <= 4


@pytest.mark.parametrize("method", ["full", "truncate"])
def test_context_file_baselines(tiny_checkpoint, tmp_path, capsys, method):
    ckpt, _ = tiny_checkpoint
    f = tmp_path / "ctx.txt"
    f.write_text(CONTEXT)
    assert main(_long(ckpt, "--context-file", str(f), "--method", method, "--json")) == 0
    assert json.loads(capsys.readouterr().out)["stats"]["method"] == method


def test_context_from_stdin_with_progress_off(tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    proc = subprocess.run(
        [sys.executable, "-m", "pcomp_jax", *_long(ckpt, "--context-file", "-", "--json")],
        input=CONTEXT.encode(),
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["stats"]["num_chunks"] >= 3


@pytest.mark.parametrize(
    "content, extra, message",
    [
        (None, [], "context file not found"),
        (b"\xff\xfe caf\xe9", [], "is not UTF-8"),
        (CONTEXT.encode(), ["--question", ""], "question is empty"),
        (CONTEXT.encode(), ["--chunk-tokens", "600"], "does not fit"),
        (CONTEXT.encode(), ["--calibrate", "sink", "--calibrate-layers", "3-1"], "calibration layers"),
    ],
)
def test_long_context_mistakes(tiny_checkpoint, tmp_path, capsys, content, extra, message):
    ckpt, _ = tiny_checkpoint
    f = tmp_path / "ctx.txt"
    if content is not None:
        f.write_bytes(content * (4 if "600" in extra else 1))
    assert main([*_long(ckpt, "--context-file", str(f)), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
