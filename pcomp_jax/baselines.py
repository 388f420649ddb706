"""The single-pass baselines that `generate(method=...)` runs on the same prompt as ParallelComp:

- "full": the whole prompt in one causal pass (positions run past the training window);
- "truncate": the context middle-truncated so prompt + answer fit the training window (as LongBench does);
- "streaming": a StreamingLLM-style cache: the first STREAMING_SINKS prompt tokens (attention sinks) and the most
  recent tokens that fit the training window, in one pass with contiguous positions (the recent window is encoded
  over itself, not streamed token by token).
"""

from __future__ import annotations

import time

from pcomp_jax.decoding import generate_ids
from pcomp_jax.errors import InputError

STREAMING_SINKS = 4


def middle_truncate(ids: list[int], keep: int) -> list[int]:
    """The first keep // 2 and the last keep - keep // 2 tokens when `ids` is longer than `keep` (LongBench's rule)."""
    if len(ids) <= keep:
        return list(ids)
    return list(ids[: keep // 2]) + list(ids[len(ids) - (keep - keep // 2) :])


def sinks_and_recent(ids: list[int], keep: int) -> list[int]:
    """The first STREAMING_SINKS tokens and the most recent ones, `keep` in all, when `ids` is longer than `keep`."""
    if len(ids) <= keep:
        return list(ids)
    return list(ids[:STREAMING_SINKS]) + list(ids[len(ids) - (keep - STREAMING_SINKS) :])


def run_baseline(model, prompt, context_ids: list[int], config, method: str, backend: str):
    """(answer ids, stats) of `method` over `prompt` (a ChunkedPrompt) with the whole context `context_ids`."""
    extra = {"context_tokens": len(context_ids)}
    budget = model.config.trained_context - config.sampling.max_new_tokens
    if method == "truncate":
        room = budget - prompt.head_len - len(prompt.suffix)
        if room < 2:
            raise InputError(
                f"the prompt without context already fills the {model.config.trained_context}-token "
                "window; lower max_new_tokens or shorten the question"
            )
        context_ids = middle_truncate(context_ids, room)
        extra["kept_context_tokens"] = len(context_ids)
    ids = prompt.whole_ids(context_ids)
    if method == "streaming":
        ids = sinks_and_recent(ids, budget)
    start = time.perf_counter()
    out = generate_ids(model.params, model.config, ids, config.sampling, backend)
    seconds = time.perf_counter() - start
    return out, {"num_chunks": 1, "kept_chunks": [0], "prompt_tokens": len(ids), "seconds": round(seconds, 3), **extra}
