"""Perplexity of a continuation given a long context, for every method (the `ppl` evaluation task).

What is measured: the context is `context_ids`, the continuation `continuation_ids` (c_0 .. c_{T-1}); the score is
the mean NLL of c_1 .. c_{T-1}, each predicted from the context (as each method presents it) and the preceding
continuation tokens. c_0 is not scored because under ParallelComp no single context token precedes it.
- full: one causal pass over context + continuation.
- truncate: the context middle-truncated so context + continuation fit the training window.
- streaming: the first 4 tokens and the most recent tokens that fit the window.
- parallelcomp: the context split into chunks; the continuation plays the question: it is appended to every chunk
  to score the chunks (so chunk selection sees the text being scored; with keep_chunks >= the number of chunks
  nothing is selected), then re-encoded over the merged cache and scored there.
No BOS, instruction or chat template is added.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pcomp_jax.baselines import middle_truncate, sinks_and_recent
from pcomp_jax.model import forward
from pcomp_jax.parallelcomp.chunking import BUDGET_ROUND, ChunkedPrompt, InputError, round_up
from pcomp_jax.parallelcomp.config import ParallelCompConfig
from pcomp_jax.parallelcomp.pipeline import (
    CHUNK_BUCKET,
    QUESTION_BUCKET,
    pad_ids,
    second_prefill,
    select_chunks,
)
from pcomp_jax.parallelcomp.presets import resolve
from pcomp_jax.parallelcomp.scoring import question_nll


@functools.partial(jax.jit, static_argnames=("config", "backend", "span"))
def _span_nll(params, tokens, start, length, *, config, backend, span: int):
    """Mean NLL of tokens[start + 1 : start + length] in one causal pass over `tokens` [T]; logits are computed at
    `span` (>= length, static) positions only."""
    t = tokens.shape[0]
    at = jnp.clip(start + jnp.arange(span), 0, t - 1)  # positions whose logits predict the next token
    out, _ = forward(params, config, tokens[None], jnp.arange(t)[None], logits_at=at[None], attention_backend=backend)
    targets = jnp.take(tokens, jnp.clip(at + 1, 0, t - 1))
    return question_nll(out.logits[0], targets, jnp.arange(span) < length - 1)


def continuation_nll(
    model, context_ids: list[int], continuation_ids: list[int], method: str, config: ParallelCompConfig, backend: str
) -> tuple[float, dict]:
    """(mean NLL of the continuation, stats) under `method` (see the module docstring)."""
    if len(continuation_ids) < 2:
        raise InputError("the continuation needs at least 2 tokens")
    window = model.config.trained_context
    config = resolve(config, model.config)
    if method == "parallelcomp":
        pieces = [context_ids[i : i + config.chunk_tokens] for i in range(0, len(context_ids), config.chunk_tokens)]
        prompt = ChunkedPrompt(
            bos=(),
            prefix=(),
            pieces=tuple(tuple(p) for p in pieces) or ((),),
            suffix=tuple(continuation_ids),
            piece_budget=round_up(config.chunk_tokens, BUDGET_ROUND),
        )
        if config.chunk_tokens + len(continuation_ids) > window:
            raise InputError("chunk + continuation exceed the training window; lower chunk_tokens")
        buffer, plan, _, _, questions, _ = select_chunks(model, [prompt], config, backend, progress=False)
        q, q_len, qp = questions[0], len(continuation_ids), questions.shape[1]
        logits, _, _, kept = second_prefill(
            model.params,
            buffer,
            jnp.asarray(questions),
            jnp.asarray([q_len], jnp.int32),
            config=model.config,
            plan=plan,
            calibration=config.calibration,
            extra=1,
            every_position=True,
        )
        targets = np.concatenate([q[1:], [0]])
        nll = question_nll(logits[0], jnp.asarray(targets), jnp.arange(qp) < q_len - 1)
        return float(nll), {"num_chunks": len(pieces), "kept_chunks": sorted(int(i) for i in kept[0] if i >= 0)}
    if method == "truncate":
        context_ids = middle_truncate(context_ids, window - len(continuation_ids))
    ids = list(context_ids) + list(continuation_ids)
    if method == "streaming":
        ids = sinks_and_recent(ids, window)
    start = len(ids) - len(continuation_ids)
    padded = round_up(len(ids), CHUNK_BUCKET)
    nll = _span_nll(
        model.params,
        jnp.asarray(pad_ids(ids, padded)),
        jnp.int32(start),
        jnp.int32(len(continuation_ids)),
        config=model.config,
        backend=backend,
        span=round_up(len(continuation_ids), QUESTION_BUCKET),
    )
    return float(nll), {"prompt_tokens": len(ids)}
