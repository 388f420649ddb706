"""Query heads and KV heads: query head n reads KV head n // G, G = num_heads // num_kv_heads (grouped-query
attention). Shared by the attention backends, the Pallas kernels and token eviction."""

from __future__ import annotations

import jax


def group_scores(scores: jax.Array, num_kv_heads: int) -> jax.Array:
    """Per-query-head scores [..., N, S] summed over each KV head's query group -> [..., K, S]."""
    *lead, n, s = scores.shape
    return scores.reshape(*lead, num_kv_heads, n // num_kv_heads, s).sum(axis=-2)
