"""Chunk eviction with bounded memory (docs/ALGORITHM.md 1.4): a fixed-size buffer of the best chunk caches so far.

Each group of freshly prefilled chunks is concatenated with the buffer and the `keep` lowest-NLL chunks survive, so
at most keep + chunk_batch chunk caches exist at once, whatever the context length. Ties go to the later chunk, as in
the official priority queue (docs/ALGORITHM.md 2.5).

A batch of documents shares one buffer: every chunk carries its document's row `doc`, and each document keeps its own
`keep` best, laid out document-major ([docs, keep] flattened), so a batch of one is the single-document case.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ChunkSet:
    """Compressed caches of several chunks (leading axis n). index is the chunk's index in its document, -1 for an
    empty slot (score +inf); doc is the document's row in a batch (0 for a single document).

    k, v [n, L, S_c, K, H]; valid [n, L, S_c, K]; context_len, index, doc [n] int32; score [n] float32 (question NLL).
    """

    k: jax.Array
    v: jax.Array
    valid: jax.Array
    context_len: jax.Array
    score: jax.Array
    index: jax.Array
    doc: jax.Array

    @property
    def count(self) -> int:
        return self.k.shape[0]

    @classmethod
    def empty(cls, n: int, layers: int, slots: int, heads: int, head_dim: int, dtype, doc=None) -> ChunkSet:
        """n empty entries; `doc` [n] says which document each belongs to (default: all 0)."""
        return cls(
            k=jnp.zeros((n, layers, slots, heads, head_dim), dtype),
            v=jnp.zeros((n, layers, slots, heads, head_dim), dtype),
            valid=jnp.zeros((n, layers, slots, heads), bool),
            context_len=jnp.zeros((n,), jnp.int32),
            score=jnp.full((n,), jnp.inf, jnp.float32),
            index=jnp.full((n,), -1, jnp.int32),
            doc=jnp.zeros((n,), jnp.int32) if doc is None else jnp.asarray(doc, jnp.int32),
        )

    def take(self, order: jax.Array) -> ChunkSet:
        return jax.tree.map(lambda x: jnp.take(x, order, axis=0, mode="clip"), self)  # in range: no fill masks


def concat(a: ChunkSet, b: ChunkSet) -> ChunkSet:
    return jax.tree.map(lambda x, y: jnp.concatenate([x, y], axis=0), a, b)


def keep_lowest(chunks: ChunkSet, keep: int, docs: int = 1) -> ChunkSet:
    """For each of `docs` documents, the `keep` of its chunks with the lowest score (among equal scores the later
    chunk wins), document-major: [docs * keep]. A document with fewer than `keep` chunks gets empty entries."""
    mine = chunks.doc[None, :] == jnp.arange(docs)[:, None]  # [docs, n]
    score = jnp.where(mine, chunks.score[None], jnp.inf)
    index = jnp.where(mine, chunks.index[None], -1)
    # primary: score ascending; then later index first
    order = jax.vmap(lambda s, i: jnp.lexsort((-i, s))[:keep])(score, index)  # [docs, keep]
    taken = chunks.take(order.reshape(-1))
    own = jnp.take_along_axis(mine, order, axis=1).reshape(-1)  # False: another document's chunk fills an empty entry
    return taken.replace(
        score=jnp.where(own, taken.score, jnp.inf),
        index=jnp.where(own, taken.index, -1),
        doc=jnp.repeat(jnp.arange(docs, dtype=jnp.int32), keep),
    )


def within_margin(chunks: ChunkSet, margin: float | None, docs: int = 1) -> ChunkSet:
    """A document-major set with every entry more than `margin` nats above its document's best score emptied (index
    -1, score +inf), so only near-ties of the best are read with it; None: unchanged."""
    if margin is None:
        return chunks
    score = chunks.score.reshape(docs, -1)
    drop = (score > jnp.min(score, axis=1, keepdims=True) + margin).reshape(-1)
    return chunks.replace(score=jnp.where(drop, jnp.inf, chunks.score), index=jnp.where(drop, -1, chunks.index))


def per_document(chunks: ChunkSet, docs: int) -> ChunkSet:
    """A document-major set [docs * m, ...] as [docs, m, ...]."""
    return jax.tree.map(lambda x: x.reshape(docs, -1, *x.shape[1:]), chunks)


def document_order(chunks: ChunkSet) -> ChunkSet:
    """Real chunks by increasing document index, empty slots last (one document's chunks)."""
    key = jnp.where(chunks.index < 0, jnp.iinfo(jnp.int32).max, chunks.index)
    return chunks.take(jnp.argsort(key))
