"""Token eviction in a chunk: keep the `capacity` context tokens the question attends to most (docs/ALGORITHM.md 1.5).

Pure and static-shaped: observation scores from the prefill (`forward(score_rows=...)`), max-pooled within the
candidates, `lax.top_k`, then the kept slots are gathered in their original order. The BOS is never a candidate and
is always kept (the official code can drop the first selected token instead: B4 in docs/ALGORITHM.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from pcomp_jax.heads import group_scores
from pcomp_jax.parallelcomp.config import TokenEviction
from pcomp_jax.parallelcomp.scoring import avg_pool, max_pool


def evict_tokens(
    k: jax.Array,
    v: jax.Array,
    valid: jax.Array,
    scores: jax.Array,
    context_len: jax.Array,
    *,
    bos_len: int,
    context_slots: int,
    eviction: TokenEviction,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Compress one chunk's cache to `bos_len + min(capacity, context_slots - bos_len)` slots.

    bos_len: leading slots kept as they are and never candidates (the BOS; with `shared_head`, BOS + prefix).
    k, v [L, T, K, H]; valid [L, T, K]; scores [L, N, T] the observation scores per query head;
    context_len: scalar, slots [0, context_len) hold BOS + prefix + chunk text (the rest is the question and padding).
    Returns k, v [L, S_c, K', H] and valid [L, S_c, K'] with K' = K, or N when `per_query_head`.
    """
    kh, n = k.shape[2], scores.shape[1]
    if eviction.per_query_head:
        k, v, valid = (jnp.repeat(x, n // kh, axis=2) for x in (k, v, valid))
    idx, kept = select_tokens(
        scores, valid, context_len, bos_len=bos_len, context_slots=context_slots, eviction=eviction
    )
    gather = lambda x: jnp.take_along_axis(x.transpose(0, 2, 1, 3), idx[..., None], axis=2).transpose(0, 2, 1, 3)
    k_sel, v_sel, valid_sel = gather(k), gather(v), kept.transpose(0, 2, 1)  # [L, cap, K', H], [L, cap, K']
    if bos_len:
        k_sel = jnp.concatenate([k[:, :bos_len], k_sel], axis=1)
        v_sel = jnp.concatenate([v[:, :bos_len], v_sel], axis=1)
        valid_sel = jnp.concatenate([valid[:, :bos_len], valid_sel], axis=1)
    return k_sel, v_sel, valid_sel


def select_tokens(
    scores: jax.Array,
    valid: jax.Array,
    context_len: jax.Array,
    *,
    bos_len: int,
    context_slots: int,
    eviction: TokenEviction,
) -> tuple[jax.Array, jax.Array]:
    """The context slots token eviction keeps: (idx [L, K', cap] in document order, kept [L, K', cap] False where
    there were fewer candidates than `cap`), with cap = min(capacity, context_slots - bos_len).

    scores [L, N, T] per query head (summed over each KV head's group unless `per_query_head`); valid [L, T, K']."""
    t, heads = scores.shape[2], valid.shape[2]
    if heads != scores.shape[1]:
        scores = group_scores(scores, heads)  # [L, K, T]: one decision per KV head
    slots = jnp.arange(t)
    candidates = (slots >= bos_len) & (slots < context_len)  # [T]
    candidates = candidates[None, None, :] & valid.transpose(0, 2, 1)  # [L, K', T]
    pool = avg_pool if eviction.pool == "avg" else max_pool
    pooled = pool(scores, candidates, eviction.pool_kernel)
    capacity = min(eviction.capacity, context_slots - bos_len)
    _, idx = lax.top_k(pooled, capacity)  # [L, K', cap]
    idx = jnp.sort(idx, axis=-1)  # keep document order
    return idx, jnp.take_along_axis(pooled, idx, axis=-1) > -jnp.inf


def keep_context(k: jax.Array, v: jax.Array, valid: jax.Array, context_len: jax.Array, *, context_slots: int):
    """No eviction: the chunk's first `context_slots` slots, with the question and padding marked invalid."""
    in_context = (jnp.arange(context_slots) < context_len)[None, :, None]  # [1, S_c, 1]
    return k[:, :context_slots], v[:, :context_slots], valid[:, :context_slots] & in_context
