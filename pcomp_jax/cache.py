"""The explicit KV cache: a plain pytree that the forward takes and returns (no mutable collections).

Slots and positions are decoupled. A cache slot is where a key is stored; its RoPE position was applied before
storing and is not recorded here. Attention masks are built from slots alone: a query written at slot s sees every
valid key at a slot <= s. ParallelComp relies on this: a merged cache holds several chunks whose positions all
start at 0, and the question written after them must see all of them.

GQA keys are stored once per KV head (never repeated per query head). `valid` is per KV head so that eviction and
calibration can drop different tokens in different heads while shapes stay static.

Every layer's keys, values and validity are arrays of their own (tuples over layers), not slices of one stacked
array: a decode step then writes its new token into each layer's buffer in place and attention reads the buffer as
it is (XLA copies a slice of a larger array before a matmul reads it). `stacked()` gives the [layers, ...] view
that the pipeline's chunk buffers use.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from pcomp_jax.config import LlamaConfig


@struct.dataclass
class KVCache:
    """Keys/values after RoPE, one entry per layer.

    k, v:  tuples of [B, S, K, H]
    valid: tuple of [B, S, K] bool, False for empty, padded or evicted slots
    end:   int32 scalar, the slot where the next tokens are written (the same for the whole batch)
    bias:  optional [B, S] float32 added to every layer's and head's attention logits toward each slot (None: no
           bias). `ParallelCompConfig.nll_bias` uses it to weigh merged chunks by their question NLL.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    valid: tuple[jax.Array, ...]
    end: jax.Array
    bias: jax.Array | None = None

    @property
    def size(self) -> int:
        """Number of slots S."""
        return self.k[0].shape[1]

    @property
    def num_layers(self) -> int:
        return len(self.k)

    @classmethod
    def empty(cls, config: LlamaConfig, batch: int, size: int, dtype=jnp.float32) -> KVCache:
        shape = (batch, size, config.num_kv_heads, config.head_dim)
        layers = range(config.num_layers)
        return cls(
            k=tuple(jnp.zeros(shape, dtype) for _ in layers),
            v=tuple(jnp.zeros(shape, dtype) for _ in layers),
            valid=tuple(jnp.zeros(shape[:-1], bool) for _ in layers),
            end=jnp.zeros((), jnp.int32),
        )

    @classmethod
    def from_stacked(cls, k: jax.Array, v: jax.Array, valid: jax.Array, end) -> KVCache:
        """From [layers, B, S, K, H] keys/values and [layers, B, S, K] validity."""
        split = lambda x: tuple(x[i] for i in range(x.shape[0]))
        return cls(k=split(k), v=split(v), valid=split(valid), end=jnp.asarray(end, jnp.int32))

    def stacked(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(k, v [layers, B, S, K, H], valid [layers, B, S, K]): a copy, for code that works on all layers at once."""
        return jnp.stack(self.k), jnp.stack(self.v), jnp.stack(self.valid)

    def grow(self, extra: int) -> KVCache:
        """The same cache with `extra` empty slots appended (e.g. room for a question and decoding)."""
        pad = [(0, 0), (0, extra), (0, 0), (0, 0)]
        return self.replace(
            k=tuple(jnp.pad(x, pad) for x in self.k),
            v=tuple(jnp.pad(x, pad) for x in self.v),
            valid=tuple(jnp.pad(x, pad[:-1]) for x in self.valid),
            bias=None if self.bias is None else jnp.pad(self.bias, pad[:2]),
        )
