"""Attention calibration at the second prefill (docs/ALGORITHM.md 1.7, 2.8), as a key filter for the model's forward.

In the chosen layers, before the question attends, keys that draw more than `threshold` of the attention of the last
`observe_last` question tokens and lie in the chosen region are removed per KV head; every head removes the same
number M (the largest outlier count), padding with its lowest-attention keys. Removal only clears validity bits, so
shapes stay static and the question keeps exact causal alignment (fixes the official code's B13, docs/ALGORITHM.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pcomp_jax.attention import masked_softmax
from pcomp_jax.parallelcomp.config import Calibration


def attention_profile(q, q_valid, q_slots, k_cache, valid, observe_last: int):
    """Mean attention of the last `observe_last` valid query rows over the cache, averaged over each KV head's query
    group. q [B, T, N, H]; q_valid [B, T]; q_slots [T]; k_cache [B, S, K, H]; valid [B, S, K] -> [B, K, S]."""
    b, t, n, h = q.shape
    kh = k_cache.shape[2]
    rows = jnp.clip(q_valid.sum(-1)[:, None] - observe_last + jnp.arange(observe_last), 0, t - 1)  # [B, r]
    qr = jnp.take_along_axis(q, rows[:, :, None, None], axis=1).reshape(b, observe_last, kh, n // kh, h)
    logits = jnp.einsum("brkgh,bskh->bkgrs", qr, k_cache, preferred_element_type=jnp.float32) * h**-0.5
    visible = jnp.arange(k_cache.shape[1])[None, None, :] <= q_slots[rows][:, :, None]  # [B, r, S]
    visible = visible[:, None, None] & valid.transpose(0, 2, 1)[:, :, None, None, :]  # [B, K, 1, r, S]
    probs = masked_softmax(logits, visible)
    return probs.mean(axis=(2, 3))  # [B, K, S]


def region_mask(valid_t: jax.Array, region: str, width: int) -> jax.Array:
    """Which keys lie in the region, counting valid keys in slot order. valid_t [B, K, S] -> [B, K, S]."""
    rank = jnp.cumsum(valid_t, axis=-1) - 1
    total = valid_t.sum(-1, keepdims=True)
    if region == "sink":
        return rank < width
    if region == "recent":
        return rank > total - width
    if region == "middle":
        return (rank > width) & (rank < total - width)
    return jnp.ones_like(valid_t)


def calibrate(profile: jax.Array, valid_t: jax.Array, calibration: Calibration) -> jax.Array:
    """New validity [B, K, S] after removing M keys per head (M = most outliers in any head of the row)."""
    outlier = valid_t & region_mask(valid_t, calibration.region, calibration.region_width)
    outlier = outlier & (profile > calibration.threshold)
    m = outlier.sum(-1).max(-1)[:, None, None]  # [B, 1, 1]
    priority = jnp.where(outlier, 2.0, jnp.where(valid_t, -profile, -jnp.inf))  # outliers first, then lowest mass
    position = jnp.argsort(jnp.argsort(-priority, axis=-1), axis=-1)  # rank of each key in that order
    return valid_t & ~(position < m)


@functools.cache  # one function per setting, so jit caches hit
def calibration_filter(calibration: Calibration):
    """A `key_filter` for `pcomp_jax.forward` that calibrates layers lo..hi and leaves the others untouched."""
    lo, hi = calibration.layers

    def key_filter(layer, q, q_valid, q_slots, k_cache, valid):
        valid_t = valid.transpose(0, 2, 1)  # [B, K, S]
        profile = attention_profile(q, q_valid, q_slots, k_cache, valid, calibration.observe_last)
        new = calibrate(profile, valid_t, calibration)
        return jnp.where((layer >= lo) & (layer <= hi), new, valid_t).transpose(0, 2, 1)

    return key_filter
