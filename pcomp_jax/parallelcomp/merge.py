"""The merged cache (docs/ALGORITHM.md 1.6): kept chunks side by side in document order, exactly one BOS.

No compaction is needed: the question's mask is slot-based, so invalid slots (evicted tokens, padding, the BOS of
every chunk but the first, empty buffer entries) simply hold keys nobody sees.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pcomp_jax.cache import KVCache
from pcomp_jax.parallelcomp.select import ChunkSet


def merged_cache(chunks: ChunkSet, *, bos_len: int) -> tuple[KVCache, jax.Array]:
    """A batch-1 KVCache over `chunks` (already in document order) and the question's first position.

    The question starts after the longest kept chunk's uncompressed context (BOS + prefix + text), as in the
    official code (docs/ALGORITHM.md 1.6, 2.7).
    """
    n, layers, slots, heads, h = chunks.k.shape
    real = chunks.index >= 0  # [n]
    keep = chunks.valid & real[:, None, None, None]
    if bos_len:
        not_first_bos = (jnp.arange(n)[:, None] > 0) & (jnp.arange(slots)[None, :] < bos_len)  # [n, S_c]
        keep = keep & ~not_first_bos[:, None, :, None]
    as_layers = lambda x: jnp.moveaxis(x, 0, 1).reshape(layers, 1, n * slots, *x.shape[3:])  # [L, 1, n*S_c, ...]
    cache = KVCache.from_stacked(as_layers(chunks.k), as_layers(chunks.v), as_layers(keep), n * slots)
    first_position = jnp.max(jnp.where(real, chunks.context_len, 0))
    return cache, first_position
