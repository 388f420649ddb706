"""The merged cache (docs/ALGORITHM.md 1.6): kept chunks side by side in document order, exactly one BOS (with
`ParallelCompConfig.shared_head`, exactly one head: BOS and instruction prefix).

No compaction is needed: the question's mask is slot-based, so invalid slots (evicted tokens, padding, the BOS of
every chunk but the first, or its whole head, empty buffer entries) simply hold keys nobody sees.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pcomp_jax.cache import KVCache
from pcomp_jax.parallelcomp.select import ChunkSet, document_order, per_document
from pcomp_jax.rope import rope_tables


def merged_cache(
    chunks: ChunkSet, *, shared_len: int, consecutive_rope=None, nll_bias: float | None = None
) -> tuple[KVCache, jax.Array]:
    """A batch-1 KVCache over `chunks` (already in document order) and the question's first position. The first
    `shared_len` slots of every chunk (the BOS, or with `ParallelCompConfig.shared_head` the whole common head) are read
    from the first chunk only.

    By default every chunk keeps its prefill positions (all from 0) and the question starts after the longest kept
    chunk's uncompressed context (BOS + prefix + text), as in the official code (docs/ALGORITHM.md 1.6, 2.7). With
    `consecutive_rope` (the model config) each chunk's keys are rotated so the chunks follow one another (a chunk's
    first token after its BOS right after the previous chunk's last) and the question follows the last.

    With `nll_bias` w the cache carries a logit bias (`KVCache.bias`): every slot of chunk j after the shared ones
    gets -w * (score_j - the best score), so the question's attention toward a chunk is scaled by exp(-w * its NLL
    gap to the best); None or 0: no bias.
    """
    n, layers, slots, heads, h = chunks.k.shape
    real = chunks.index >= 0  # [n]
    keep = chunks.valid & real[:, None, None, None]
    if shared_len:
        repeated = (jnp.arange(n)[:, None] > 0) & (jnp.arange(slots)[None, :] < shared_len)  # [n, S_c]
        keep = keep & ~repeated[:, None, :, None]
    k = chunks.k
    if consecutive_rope is None:
        first_position = jnp.max(jnp.where(real, chunks.context_len, 0))
    else:
        advance = jnp.where(real, chunks.context_len - shared_len, 0)  # [n]
        offset = jnp.cumsum(advance) - advance  # chunk j moves by the tokens of the chunks before it
        k = shift_keys(k, offset, consecutive_rope)
        first_position = jnp.sum(advance) + shared_len
    as_layers = lambda x: jnp.moveaxis(x, 0, 1).reshape(layers, 1, n * slots, *x.shape[3:])  # [L, 1, n*S_c, ...]
    cache = KVCache.from_stacked(as_layers(k), as_layers(chunks.v), as_layers(keep), n * slots)
    if nll_bias:  # 0 weighs every chunk alike: no bias to add in every layer and decode step
        best = jnp.min(jnp.where(real, chunks.score, jnp.inf))
        gap = jnp.where(real, chunks.score - best, 0.0)  # [n]
        shared = jnp.arange(slots) < shared_len  # [S_c]: read from the first chunk only, common to all
        bias = jnp.where(shared[None, :], 0.0, -nll_bias * gap[:, None])  # [n, S_c]
        cache = cache.replace(bias=bias.reshape(1, n * slots).astype(jnp.float32))
    return cache, first_position


def merged_batch(chunks: ChunkSet, docs: int, *, shared_len: int, consecutive_rope=None, nll_bias=None):
    """The merged caches of a batch of documents as one KVCache [docs, S, K, H] (every row's chunks in document
    order; rows differ only in which slots are valid), the question's first position [docs], and the kept chunk
    indices [docs, keep] in document order (-1: empty). `chunks` is document-major (`select.keep_lowest`)."""

    def one(c: ChunkSet):
        c = document_order(c)
        cache, first_position = merged_cache(
            c, shared_len=shared_len, consecutive_rope=consecutive_rope, nll_bias=nll_bias
        )
        return cache.k, cache.v, cache.valid, cache.bias, first_position, c.index

    k, v, valid, bias, first_position, index = jax.vmap(one)(per_document(chunks, docs))
    rows = lambda layers: tuple(x[:, 0] for x in layers)  # [docs, 1, S, ...] -> [docs, S, ...]
    end = (chunks.count // docs) * chunks.k.shape[2]
    bias = None if bias is None else bias[:, 0]
    cache = KVCache(k=rows(k), v=rows(v), valid=rows(valid), end=jnp.int32(end), bias=bias)
    return cache, first_position, index


def shift_keys(k: jax.Array, offset: jax.Array, rope_config) -> jax.Array:
    """Keys k [n, L, S, K, H] rotated by RoPE as if each chunk's positions were `offset` [n] later (a rotation by
    p + d is the rotation by p followed by the rotation by d), in float32, back in k's dtype."""
    cos, sin = rope_tables(rope_config, offset)  # [n, H]
    cos, sin = cos[:, None, None, None], sin[:, None, None, None]
    x = k.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos + rotated * sin).astype(k.dtype)
