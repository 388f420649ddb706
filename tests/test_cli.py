"""`python -m pcomp_jax generate`: output formats and one-line errors for user mistakes."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import types

import pytest
from one_line import assert_one_line_error

from pcomp_jax import CheckpointError, load
from pcomp_jax.cli import main, read_context


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


# --- one line for every bad input (checked before the weights load where no model is needed) ----------------------


def _context_file(tmp_path, content: bytes = CONTEXT.encode()):
    f = tmp_path / "ctx.txt"
    f.write_bytes(content)
    return str(f)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--question", "x"], "--question only apply to a document (--context-file)"),
        (["--capacity", "8"], "--capacity only apply to a document"),
        (["--method", "truncate"], "--method only apply to a document"),
        (["--chunk-tokens", "64"], "--chunk-tokens only apply to a document"),
        (["--question", "x", "--chunk-tokens", "64"], "--question, --chunk-tokens only apply to a document"),
        (["--temperature", "nan"], "temperature must be a finite number"),
        (["--temperature", "inf"], "temperature must be a finite number"),
    ],
)
def test_prompt_mode_mistakes_before_loading(tiny_checkpoint, capsys, no_load, extra, message):
    ckpt, _ = tiny_checkpoint
    assert main(["generate", "--ckpt", str(ckpt), "--prompt", "hi", *extra]) == 2
    assert_one_line_error(capsys, message)


def test_prompt_past_the_window_points_to_context_file(tiny_checkpoint, capsys):
    ckpt, _ = tiny_checkpoint
    assert main(["generate", "--ckpt", str(ckpt), "--prompt", "hi", "--max-new-tokens", "1000000"]) == 2
    assert "--context-file" in assert_one_line_error(capsys, "past the model's 512-token window")


@pytest.mark.parametrize(
    "content, extra, message",
    [
        (CONTEXT.encode(), ["--question", ""], "question is empty"),
        (CONTEXT.encode(), ["--question", "   "], "question is empty"),
        (b"", [], "is empty"),
        (b" \n\t \n", [], "is empty"),
        (CONTEXT.encode(), ["--calibrate", "sink", "--calibrate-layers", "5-9"], "past the model's last layer"),
        (CONTEXT.encode(), ["--calibrate-layers", "0-3"], "--calibrate-layers needs --calibrate"),
    ],
    ids=["empty-question", "blank-question", "empty-file", "blank-file", "calib-layers", "layers-alone"],
)
def test_document_mistakes_before_loading(tiny_checkpoint, tmp_path, capsys, no_load, content, extra, message):
    ckpt, _ = tiny_checkpoint
    assert main([*_long(ckpt, "--context-file", _context_file(tmp_path, content)), *extra]) == 2
    assert_one_line_error(capsys, message)


def test_directory_as_context_file(tiny_checkpoint, tmp_path, capsys, no_load):
    ckpt, _ = tiny_checkpoint
    assert main(_long(ckpt, "--context-file", str(tmp_path))) == 2
    assert_one_line_error(capsys, "is a directory")


def test_empty_stdin(tiny_checkpoint, capsys, monkeypatch, no_load):
    ckpt, _ = tiny_checkpoint
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(b"")))
    assert main(_long(ckpt, "--context-file", "-")) == 2
    assert_one_line_error(capsys, "standard input is empty")


def test_utf8_bom_is_dropped(tmp_path):
    f = tmp_path / "bom.txt"
    f.write_bytes(b"\xef\xbb\xbfhello")
    assert read_context(str(f)) == "hello"


# --- damaged checkpoints: one line on the command line, CheckpointError from the API -------------------------------


def _set_num_layers(ckpt):
    config = json.loads((ckpt / "config.json").read_text())
    assert config["num_layers"] == 2
    (ckpt / "config.json").write_text(json.dumps({**config, "num_layers": 3}))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: (c / "config.json").write_text('{"format": "pcomp-jax/1", '), "config.json is not valid JSON"),
        (_set_num_layers, "the config and params come from different models"),
        (lambda c: (c / "tokenizer.json").unlink(), "has no tokenizer files"),
    ],
    ids=["config-json", "num-layers", "no-tokenizer"],
)
def test_damaged_checkpoint(tiny_checkpoint, tmp_path, capsys, damage, message):
    ckpt = shutil.copytree(tiny_checkpoint[0], tmp_path / "ckpt")
    damage(ckpt)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load(ckpt)
    assert main(["generate", "--ckpt", str(ckpt), "--prompt", "hi"]) == 2
    assert_one_line_error(capsys, message)


def _many(ckpt, *extra):
    return ["generate", "--ckpt", str(ckpt), "--chunk-tokens", "128", "--max-new-tokens", "4", *extra]


def test_questions_file_gives_json_lines_equal_to_one_call_each(tiny_checkpoint, tmp_path, capsys):
    """One prefill, a JSON line per question in order, each answer the one `--question` gives."""
    ckpt, _ = tiny_checkpoint
    ctx = _context_file(tmp_path)
    questions = ["What jumps?", "Who is lazy?", "What colour is the fox?"]
    q = tmp_path / "q.txt"
    q.write_text("\ufeff" + "\n".join([questions[0], "", questions[1], "  ", questions[2]]) + "\n")
    assert main([*_many(ckpt, "--context-file", ctx, "--questions-file", str(q))]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["question"] for x in lines] == questions
    assert lines[0]["stats"]["document"]["num_chunks"] >= 3 and all(x["stats"]["staged"] for x in lines)
    for line in lines:
        assert main([*_many(ckpt, "--context-file", ctx, "--question", line["question"], "--json")]) == 0
        single = json.loads(capsys.readouterr().out)
        assert single["tokens"] == line["tokens"] and single["stats"]["kept_chunks"] == line["stats"]["kept_chunks"]


@pytest.mark.parametrize(
    "questions, extra, message",
    [
        (None, [], "questions file not found"),
        (b"\n  \n", [], "holds no question"),
        (b"\xff\xfe?", [], "is not UTF-8"),
        (b"Why?\n", ["--method", "truncate"], "--method must be parallelcomp"),
    ],
    ids=["missing", "blank", "not-utf8", "method"],
)
def test_questions_file_mistakes_before_loading(tiny_checkpoint, tmp_path, capsys, no_load, questions, extra, message):
    ckpt, _ = tiny_checkpoint
    q = tmp_path / "q.txt"
    if questions is not None:
        q.write_bytes(questions)
    assert main([*_many(ckpt, "--context-file", _context_file(tmp_path), "--questions-file", str(q)), *extra]) == 2
    assert_one_line_error(capsys, message)
    assert main([*_many(ckpt, "--prompt", "hi", "--questions-file", str(q))]) == 2
    assert_one_line_error(capsys, "--questions-file, --chunk-tokens only apply to a document")


def test_bad_mesh_is_a_one_line_error_before_loading(tiny_checkpoint, tmp_path, capsys, no_load):
    ckpt, _ = tiny_checkpoint
    assert main([*_long(ckpt, "--context-file", _context_file(tmp_path), "--mesh", "chunks=64")]) == 2
    assert_one_line_error(capsys, "needs 64 devices")


def test_keep_margin_flag_takes_a_finite_number_of_nats():
    import argparse

    from pcomp_jax.cli import margin

    assert margin("0.1") == 0.1 and margin("0") == 0.0
    for bad, message in [("-1", "must be a finite number >= 0"), ("inf", "must be a finite number >= 0")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            margin(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="not a number: 'x'"):
        margin("x")


def test_nll_bias_flag_reaches_the_config(tiny_checkpoint, tmp_path, capsys):
    """--nll-bias W weighs the kept chunks (stats say so, the same chunks are read); a negative value is refused."""
    ckpt, _ = tiny_checkpoint
    ctx = _context_file(tmp_path)
    assert main([*_long(ckpt, "--context-file", ctx, "--json", "--keep-chunks", "2", "--nll-bias", "10")]) == 0
    stats = json.loads(capsys.readouterr().out)["stats"]
    assert stats["nll_bias"] == 10.0 and len(stats["kept_chunks"]) == 2
    with pytest.raises(SystemExit):  # argparse's own one-line usage error (the type: test_keep_margin_flag_...)
        main([*_long(ckpt, "--context-file", ctx, "--nll-bias", "-1")])
    assert "--nll-bias: must be a finite number >= 0, got -1" in capsys.readouterr().err


def test_shared_head_flag_reaches_the_config(tiny_checkpoint, tmp_path, capsys):
    """--shared-head reads the common head once (stats say so); it only applies to a document."""
    ckpt, _ = tiny_checkpoint
    ctx = _context_file(tmp_path)
    stats = {}
    for extra, expected in [((), False), (("--shared-head",), True)]:
        assert main([*_long(ckpt, "--context-file", ctx, "--json", "--keep-chunks", "2", *extra)]) == 0
        stats[expected] = json.loads(capsys.readouterr().out)["stats"]
        assert stats[expected]["shared_head"] is expected and len(stats[expected]["kept_chunks"]) == 2
    tok = load(ckpt).tokenizer
    head, bos = stats[True]["head_tokens"], int(tok("a")["input_ids"][:1] == [tok.bos_token_id])  # a BOS slot
    assert head > bos  # the second kept chunk's head beyond its BOS is not read again
    per_layer = (stats[False]["cache_tokens_per_layer"], stats[True]["cache_tokens_per_layer"])
    assert {a - b for a, b in zip(*per_layer, strict=True)} == {head - bos}
    assert main(["generate", "--ckpt", str(ckpt), "--prompt", "hi", "--shared-head"]) == 2
    assert_one_line_error(capsys, "--shared-head only apply to a document")


def test_summaries_that_fit_are_read_whole_unless_always_chunk(tiny_checkpoint, tmp_path, capsys):
    ckpt, _ = tiny_checkpoint
    ctx = _context_file(tmp_path)
    summary = ["generate", "--ckpt", str(ckpt), "--template", "summarize", "--chunk-tokens", "64", "--json"]
    for extra, method in [((), "full"), (("--always-chunk",), "parallelcomp")]:
        assert main([*summary, "--max-new-tokens", "4", "--context-file", ctx, *extra]) == 0
        assert json.loads(capsys.readouterr().out)["stats"]["method"] == method
