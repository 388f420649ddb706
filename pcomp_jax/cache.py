"""The explicit KV cache: a plain pytree that the forward takes and returns (no mutable collections).

Slots and positions are decoupled. A cache slot is where a key is stored; its RoPE position was applied before
storing and is not recorded here. Attention masks are built from slots alone: a query written at slot s sees every
valid key at a slot <= s. ParallelComp relies on this: a merged cache holds several chunks whose positions all
start at 0, and the question written after them must see all of them.

GQA keys are stored once per KV head (never repeated per query head). `valid` is per KV head so that eviction and
calibration can drop different tokens in different heads while shapes stay static.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from pcomp_jax.config import LlamaConfig


@struct.dataclass
class KVCache:
    """Keys/values after RoPE for every layer.

    k, v:  [layers, B, S, K, H]
    valid: [layers, B, S, K] bool, False for empty, padded or evicted slots
    end:   int32 scalar, the slot where the next tokens are written (the same for the whole batch)
    """

    k: jax.Array
    v: jax.Array
    valid: jax.Array
    end: jax.Array

    @property
    def size(self) -> int:
        """Number of slots S."""
        return self.k.shape[2]

    @classmethod
    def empty(cls, config: LlamaConfig, batch: int, size: int, dtype=jnp.float32) -> KVCache:
        shape = (config.num_layers, batch, size, config.num_kv_heads, config.head_dim)
        return cls(
            k=jnp.zeros(shape, dtype),
            v=jnp.zeros(shape, dtype),
            valid=jnp.zeros(shape[:-1], bool),
            end=jnp.zeros((), jnp.int32),
        )

    def grow(self, extra: int) -> KVCache:
        """The same cache with `extra` empty slots appended (e.g. room for a question and decoding)."""
        pad = [(0, 0), (0, 0), (0, extra), (0, 0), (0, 0)]
        return self.replace(k=jnp.pad(self.k, pad), v=jnp.pad(self.v, pad), valid=jnp.pad(self.valid, pad[:-1]))
