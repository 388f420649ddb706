"""Chunk eviction with bounded memory (docs/ALGORITHM.md 1.4): a fixed-size buffer of the best chunk caches so far.

Each group of freshly prefilled chunks is concatenated with the buffer and the `keep` lowest-NLL chunks survive, so
at most keep + chunk_batch chunk caches exist at once, whatever the context length. Ties go to the later chunk, as in
the official priority queue (docs/ALGORITHM.md 2.5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ChunkSet:
    """Compressed caches of several chunks (leading axis n). index is the chunk's document index, -1 for an empty
    slot (score +inf).

    k, v [n, L, S_c, K, H]; valid [n, L, S_c, K]; context_len, index [n] int32; score [n] float32 (question NLL).
    """

    k: jax.Array
    v: jax.Array
    valid: jax.Array
    context_len: jax.Array
    score: jax.Array
    index: jax.Array

    @property
    def count(self) -> int:
        return self.k.shape[0]

    @classmethod
    def empty(cls, n: int, layers: int, slots: int, heads: int, head_dim: int, dtype) -> ChunkSet:
        return cls(
            k=jnp.zeros((n, layers, slots, heads, head_dim), dtype),
            v=jnp.zeros((n, layers, slots, heads, head_dim), dtype),
            valid=jnp.zeros((n, layers, slots, heads), bool),
            context_len=jnp.zeros((n,), jnp.int32),
            score=jnp.full((n,), jnp.inf, jnp.float32),
            index=jnp.full((n,), -1, jnp.int32),
        )

    def take(self, order: jax.Array) -> ChunkSet:
        return jax.tree.map(lambda x: jnp.take(x, order, axis=0), self)


def concat(a: ChunkSet, b: ChunkSet) -> ChunkSet:
    return jax.tree.map(lambda x, y: jnp.concatenate([x, y], axis=0), a, b)


def keep_lowest(chunks: ChunkSet, keep: int) -> ChunkSet:
    """The `keep` chunks with the lowest score; among equal scores the later chunk wins."""
    order = jnp.lexsort((-chunks.index, chunks.score))  # primary: score ascending; then later index first
    return chunks.take(order[:keep])


def document_order(chunks: ChunkSet) -> ChunkSet:
    """Real chunks by increasing document index, empty slots last."""
    key = jnp.where(chunks.index < 0, jnp.iinfo(jnp.int32).max, chunks.index)
    return chunks.take(jnp.argsort(key))
