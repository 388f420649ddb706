"""Evaluation harness: metrics against hand-computed values, generators, dataset readers, and the CLI end to end
on a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hf_tiny import tiny_tokenizer
from one_line import assert_one_line_error

from pcomp_jax.eval import metrics as m
from pcomp_jax.eval.cli import main, parse_length
from pcomp_jax.eval.methods import parse_method
from pcomp_jax.eval.report import markdown_table, summarize
from pcomp_jax.eval.tasks import answers_of, get_task, longbench_template
from pcomp_jax.parallelcomp.chunking import chunk_prompt
from pcomp_jax.parallelcomp.config import ParallelCompConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# --- metrics ---------------------------------------------------------------------------------------------------


def test_qa_f1_hand_values():
    assert m.qa_f1("The cat", "cat") == 1.0
    assert m.qa_f1("a black cat sat", "the black dog") == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3) * 1)
    assert m.qa_f1("Paris!", "paris") == 1.0 and m.qa_f1("", "x") == 0.0


def test_count_retrieval_classification():
    assert m.count("3 or 4", "3") == 0.5
    assert m.count("none", "3") == 0.0
    assert m.retrieval("Paragraph 3", "Paragraph 3") == 1.0
    assert m.retrieval("Paragraph 3 or 12", "Paragraph 3") == 0.5
    assert m.retrieval_zh("段落5", "段落5") == 1.0
    classes = ["Location", "Abbreviation", "Number of something"]
    assert m.classification("Location", "Location", all_classes=classes) == 1.0
    assert m.classification("Location or Abbreviation", "Location", all_classes=classes) == 0.5
    # "Number" names a class that is a substring of the ground truth only: it does not count as a match
    assert (
        m.classification("Number of something", "Number of something", all_classes=["Number", "Number of something"])
        == 1.0
    )


def test_rouge_l_fixed_pair():
    # LCS of the two is "one two four five", 4 of 5 words each way: P = R = F = 0.8
    assert m.rouge_l("one two three four five", "one two six four five") == pytest.approx(0.8, abs=1e-6)
    # LCS "one four" of 4 and 2 words: P = 2/4, R = 2/2, F = 2PR/(P+R) = 2/3
    assert m.rouge_l("one two three four", "one four") == pytest.approx(2 / 3, abs=1e-6)
    assert m.rouge_l("", "anything") == 0.0


def test_code_sim_uses_first_code_line():
    assert m.code_sim("# comment\nreturn x + 1\nmore", "return x + 1") == 1.0
    assert 0 < m.code_sim("return y", "return x + 1") < 1


def test_first_integer_and_word_match():
    assert m.first_integer("The pass key is 71432. Or 5", "71432") == 1.0
    assert m.first_integer("It is 5 and 71432", "71432") == 0.0
    assert m.word_match('The value is "a1b2-c3".', "a1b2-c3") == 1.0
    assert m.word_match("The value is a1b2-c3x", "a1b2-c3") == 0.0


def test_longbench_first_line_rule_and_max_over_answers():
    assert m.longbench_score("triviaqa", "\nParis\nLondon", ["London", "Paris"]) == 1.0
    assert m.longbench_score("triviaqa", "London is wrong\nParis", ["Paris"]) == 0.0
    assert m.longbench_score("multi_news", "a b c", ["x y", "a b c"]) == pytest.approx(1.0)


# --- generators ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["passkey", "number_string"])
def test_generated_needle_once_at_depth_and_length_within_2_percent(name):
    tok = tiny_tokenizer()
    task = get_task(name)
    for s in task.make(tok, [1500, 3000], 3, seed=1, options={}):
        answer = s.answers[0]
        assert s.context.count(answer) == 2  # the needle sentence states it twice ("... X. Remember it. X is ...")
        assert s.context.count("Remember it.") == 1
        at = s.context.index("Remember it.") / len(s.context)
        assert abs(at - s.meta["depth"]) < 0.05
        p = chunk_prompt(tok, s.context, s.question, s.template, chunk_tokens=1 << 30)
        assert abs(len(p.whole_ids()) - s.length) <= 0.02 * s.length


def test_generators_are_deterministic():
    tok = tiny_tokenizer()
    a = get_task("passkey").make(tok, [800], 2, seed=3, options={})
    b = get_task("passkey").make(tok, [800], 2, seed=3, options={})
    c = get_task("passkey").make(tok, [800], 2, seed=4, options={})
    assert a == b and a != c


def test_kv_retrieval_key_is_present_once():
    tok = tiny_tokenizer()
    for s in get_task("kv_retrieval").make(tok, [1500], 2, seed=0, options={}):
        key = s.question.split("key ")[1].split(" ")[0]
        data = json.loads(s.context.removeprefix("JSON data:\n"))
        assert data[key] == s.answers[0] and s.context.count(key) == 1


def test_infinitebench_passkey_zip_reader():
    zip_path = SHARED / "infinitebench" / "infinitebench_passkey_8k-64k_archive.zip"
    samples = get_task("passkey").make(None, [], 2, seed=0, options={"data": str(zip_path)})
    assert len(samples) == 8 and sorted({s.length for s in samples}) == [8192, 16384, 32768, 65536]
    assert all(s.answers[0] in s.context for s in samples)


def test_longbench_reader_and_official_template():
    data = SHARED / "longbench" / "multi_news.jsonl"
    options = {"data": str(data), "longbench_config": str(SHARED / "longbench" / "config_official")}
    samples = get_task("longbench:multi_news").make(None, [], 3, seed=0, options=options)
    assert len(samples) == 3 and samples[0].max_new_tokens == 512 and samples[0].answers
    template, _ = longbench_template(options["longbench_config"], "passage_retrieval_en")
    assert "{question}" in template.suffix and "{context}" not in template.prefix + template.suffix
    with pytest.raises(ValueError, match="need --data"):
        get_task("longbench:multi_news").make(None, [], 3, seed=0, options={})
    with pytest.raises(ValueError, match="unknown LongBench dataset"):
        get_task("longbench:nope")


# --- methods, report, CLI --------------------------------------------------------------------------------------


def test_method_names():
    base = ParallelCompConfig()
    method, config = parse_method("parallelcomp+evict-256+calib-sink-0-7+keep-2", base)
    assert method == "parallelcomp" and config.eviction.capacity == 256 and config.keep_chunks == 2
    assert config.calibration.region == "sink" and config.calibration.layers == (0, 7)
    assert parse_method("streaming", base)[0] == "streaming"
    for bad, msg in [
        ("magic", "unknown method"),
        ("parallelcomp+zap", "unknown modifier"),
        ("truncate+evict", "parallelcomp only"),
        ("parallelcomp+calib-sink", "bad modifier"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_method(bad, base)


def test_lengths_and_table():
    assert parse_length("8k") == 8192 and parse_length("128K") == 131072 and parse_length("4000") == 4000
    rows = [{"method": "a", "length": 8192, "score": 1.0}, {"method": "a", "length": 8192, "score": 0.0}]
    summary = summarize(rows)
    assert summary == [{"method": "a", "length": 8192, "samples": 2, "score": 50.0}]
    assert "| a | 50.00 (n=2) |" in markdown_table("t", summary)


def test_eval_cli_end_to_end_and_resume(tiny_checkpoint, tmp_path, capsys):
    ckpt, _ = tiny_checkpoint
    out = tmp_path / "run"
    argv = [
        "--ckpt",
        str(ckpt),
        "--task",
        "passkey",
        "--method",
        "parallelcomp,truncate,streaming",
        "--lengths",
        "600,900",
        "--samples",
        "2",
        "--chunk-tokens",
        "128",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 * 2 and {r["method"] for r in rows} == {"parallelcomp", "truncate", "streaming"}
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["summary"]) == 6 and summary["meta"]["task"] == "passkey"
    assert (out / "summary.md").exists() and (out / "score_by_length.png").stat().st_size > 1000
    assert main(argv) == 0  # resumed: nothing new is predicted
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 12
    assert main([*argv[:3], "longbench:multi_news", *argv[4:]]) == 2
    assert "need --data" in capsys.readouterr().err


def test_ppl_task_all_methods(tiny_checkpoint, tmp_path):
    """Perplexity runs for every method; with a short context every method sees the same tokens, so all agree."""
    ckpt, _ = tiny_checkpoint
    book = tmp_path / "book.txt"
    book.write_text(" ".join(f"word{i % 97} and more text number {i}." for i in range(400)))
    out = tmp_path / "ppl"
    argv = [
        "--ckpt",
        str(ckpt),
        "--task",
        "ppl",
        "--data",
        str(book),
        "--method",
        "parallelcomp+keep-8,full,truncate,streaming",
        "--lengths",
        "300",
        "--samples",
        "1",
        "--chunk-tokens",
        "128",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())["summary"]
    ppl = {s["method"]: s["score"] for s in summary}
    assert all(p > 1 for p in ppl.values()), ppl
    assert ppl["full"] == pytest.approx(ppl["truncate"]) == pytest.approx(ppl["streaming"])  # all fit the window


def test_ppl_one_chunk_parallelcomp_equals_full(tiny_checkpoint):
    """With the context in one chunk, ParallelComp's continuation NLL equals the plain causal pass."""
    from pcomp_jax import load
    from pcomp_jax.parallelcomp.perplexity import continuation_nll

    ckpt, _ = tiny_checkpoint
    model = load(ckpt, attention_backend="reference")
    ctx, cont = list(range(10, 90)), list(range(100, 140))
    config = ParallelCompConfig(chunk_tokens=128, keep_chunks=1)
    pc, stats = continuation_nll(model, ctx, cont, "parallelcomp", config, "reference")
    full, _ = continuation_nll(model, ctx, cont, "full", config, "reference")
    assert stats["num_chunks"] == 1 and pc == pytest.approx(full, abs=1e-4)


# --- one line for every bad input (checked before the model loads where none is needed) ----------------------------


def _tiny_run(ckpt, out, *extra):
    return [
        "--ckpt",
        str(ckpt),
        "--task",
        "passkey",
        "--lengths",
        "300",
        "--samples",
        "1",
        "--chunk-tokens",
        "192",
        "--no-plots",
        "--out",
        str(out),
        *extra,
    ]


def test_resume_with_other_settings_is_refused_by_name(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    ckpt, _ = tiny_checkpoint
    out = tmp_path / "run"
    assert main(_tiny_run(ckpt, out)) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["chunk_tokens"] == 192 and settings["ckpt"] == str(ckpt.resolve())
    assert json.loads((out / "summary.json").read_text())["meta"]["settings"] == settings
    predictions = (out / "predictions.jsonl").read_text()
    capsys.readouterr()

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were compared")

    with monkeypatch.context() as m:
        m.setattr("pcomp_jax.pretrained.load", load)
        assert main(_tiny_run(ckpt, out, "--chunk-tokens", "256")) == 2
        err = assert_one_line_error(capsys, "--chunk-tokens 192 -> 256")
        assert "choose a new --out" in err and "--seed" not in err
        assert main(_tiny_run(ckpt, out, "--seed", "1")) == 2
        assert "choose a new --out" in assert_one_line_error(capsys, "--seed 0 -> 1")
        assert main(_tiny_run(ckpt, out, "--always-chunk")) == 2
        assert_one_line_error(capsys, "--always-chunk False -> True")
        older = {k: v for k, v in settings.items() if k != "always_chunk"}  # a run from before the flag chunked
        (out / "settings.json").write_text(json.dumps(older))
        assert main(_tiny_run(ckpt, out)) == 2
        assert_one_line_error(capsys, "--always-chunk None -> False")
        (out / "settings.json").write_text(json.dumps(settings))
    assert (out / "predictions.jsonl").read_text() == predictions  # nothing mixed in
    assert main(_tiny_run(ckpt, out)) == 0  # the same settings resume (nothing new to predict)
    assert (out / "predictions.jsonl").read_text() == predictions


def test_predictions_without_settings_are_refused(tiny_checkpoint, tmp_path, capsys, no_load):
    ckpt, _ = tiny_checkpoint
    out = tmp_path / "old"
    out.mkdir()
    (out / "predictions.jsonl").write_text('{"method": "parallelcomp", "id": "passkey-300-0"}\n')
    assert main(_tiny_run(ckpt, out)) == 2
    assert "choose a new --out" in assert_one_line_error(capsys, "without recorded settings (an older run)")


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--lengths=0", "argument --lengths: lengths must be whole numbers of tokens >= 1, got '0'"),
        ("--lengths=-5", "argument --lengths: lengths must be whole numbers of tokens >= 1, got '-5'"),
        ("--lengths=8q", "argument --lengths: bad length '8q'"),
        ("--lengths=8k,0.5", "got '0.5'"),
        ("--dtype=float99", "argument --dtype: invalid choice: 'float99'"),
        ("--dtype=int8", "argument --dtype: invalid choice: 'int8'"),
    ],
)
def test_bad_lengths_and_dtype_are_argparse_errors(tmp_path, capsys, arg, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(tmp_path), "--task", "passkey", "--out", str(tmp_path / "out"), arg])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_lengths_with_suffixes():
    assert parse_length("1m") == 1024 * 1024 and parse_length("0.5k") == 512 and parse_length(" 8K ") == 8192


def test_longbench_without_data_is_refused_before_loading(tiny_checkpoint, tmp_path, capsys, no_load):
    ckpt, _ = tiny_checkpoint
    argv = ["--ckpt", str(ckpt), "--task", "longbench:triviaqa", "--no-plots", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert_one_line_error(capsys, "longbench tasks need --data FILE.jsonl")


def _longbench_config(directory, prompt="Passages: {context}\nQuestion: {input}\nAnswer:", maxlen=16):
    directory.mkdir(exist_ok=True)
    (directory / "dataset2prompt.json").write_text(json.dumps({"triviaqa": prompt}))
    (directory / "dataset2maxlen.json").write_text(json.dumps({"triviaqa": maxlen}))
    return directory


GOOD_RECORD = {"context": "Paris is the capital of France.", "input": "Capital of France?", "answers": ["Paris"]}


@pytest.mark.parametrize(
    "lines, prompt, message",
    [
        ([GOOD_RECORD, {"input": "q", "answers": ["a"]}], None, "data file lb.jsonl, line 2: no 'context' field"),
        ([GOOD_RECORD, {**GOOD_RECORD, "context": 5}], None, "line 2: field 'context' is a int"),
        (["context,input", "a,b"], None, "data file lb.jsonl, line 1: not JSON"),
        ([["a list"]], None, "data file lb.jsonl, line 1: expected a JSON object, got a list"),
        ([GOOD_RECORD], "no context here: {input}", "the 'triviaqa' prompt must contain {context} once"),
        ([GOOD_RECORD], "{context} and {context}", "the 'triviaqa' prompt must contain {context} once"),
    ],
    ids=["no-context", "context-type", "csv", "not-object", "prompt-without-context", "prompt-twice"],
)
def test_bad_longbench_files_name_file_and_line(tiny_checkpoint, tmp_path, capsys, no_load, lines, prompt, message):
    ckpt, _ = tiny_checkpoint
    data = tmp_path / "lb.jsonl"
    data.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    config = _longbench_config(tmp_path / "config", **({"prompt": prompt} if prompt else {}))
    argv = ["--ckpt", str(ckpt), "--task", "longbench:triviaqa", "--data", str(data), "--no-plots"]
    assert main([*argv, "--longbench-config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert_one_line_error(capsys, message)
    assert not (tmp_path / "out").exists()


def test_string_answers_are_one_answer(tmp_path):
    assert answers_of({"answers": "Paris"}, "answers") == ("Paris",)
    assert answers_of({"answers": ["Paris", "paris"]}, "answers") == ("Paris", "paris")
    assert answers_of({"answers": 42}, "answers") == ("42",)
    data = tmp_path / "lb.jsonl"
    data.write_text(json.dumps({**GOOD_RECORD, "answers": "Paris"}) + "\n" + json.dumps(GOOD_RECORD) + "\n")
    options = {"data": str(data), "longbench_config": str(_longbench_config(tmp_path / "config"))}
    samples = get_task("longbench:triviaqa").make(None, [], 2, seed=0, options=options)
    assert [s.answers for s in samples] == [("Paris",), ("Paris",)]
    assert samples[0].max_new_tokens == 16 and samples[0].context == GOOD_RECORD["context"]


def test_template_does_not_apply_to_longbench(tiny_checkpoint, tmp_path, capsys, no_load):
    ckpt, _ = tiny_checkpoint
    data = tmp_path / "lb.jsonl"
    data.write_text(json.dumps(GOOD_RECORD) + "\n")
    config = _longbench_config(tmp_path / "config")
    argv = ["--ckpt", str(ckpt), "--task", "longbench:triviaqa", "--data", str(data), "--longbench-config"]
    argv += [str(config), "--template", "retrieval", "--no-plots", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert_one_line_error(capsys, "--template does not apply to LongBench tasks")


def test_batched_eval_predicts_what_one_at_a_time_predicts(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    argv = ["--ckpt", str(ckpt), "--task", "passkey", "--method", "parallelcomp,truncate", "--lengths", "600,900"]
    argv += ["--samples", "2", "--chunk-tokens", "128", "--no-plots"]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert main([*argv, "--batch", "3", "--out", str(tmp_path / "three")]) == 0

    def predictions(out):
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        return {
            (r["method"], r["id"]): (
                r["prediction"],
                r["stats"]["kept_chunks"] if "kept_chunks" in r["stats"] else None,
            )
            for r in rows
        }, rows

    one, _ = predictions(tmp_path / "one")
    three, rows = predictions(tmp_path / "three")
    assert one == three and len(one) == 2 * 2 * 2
    assert {r["stats"].get("batch") for r in rows if r["method"] == "parallelcomp"} == {3, None}  # batches of 3 and 1


def test_batch_does_not_apply_to_perplexity(tiny_checkpoint, tmp_path, capsys, no_load):
    ckpt, _ = tiny_checkpoint
    argv = ["--ckpt", str(ckpt), "--task", "ppl", "--batch", "2", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert_one_line_error(capsys, "--batch does not apply to ppl")
