"""Rotary position embeddings (RoPE), HF "rotate half" layout, with linear and Llama-3 frequency scaling.

Positions are explicit inputs everywhere: ParallelComp gives every chunk positions 0..L-1 and the question
positions after the longest kept chunk, so RoPE never derives positions from slot indices.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from pcomp_jax.config import LlamaConfig


def inverse_frequencies(config: LlamaConfig) -> np.ndarray:
    """Per-pair inverse frequencies [head_dim // 2] in float32, after any scaling (computed on the host)."""
    dim = config.head_dim
    inv = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    s = config.rope_scaling
    if s is None:
        pass
    elif s.kind == "linear":
        inv = inv / s.factor
    elif s.kind == "llama3":
        # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
        low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
        high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
        wavelen = 2 * math.pi / inv
        smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
            s.high_freq_factor - s.low_freq_factor
        )
        mid = (1 - smooth) * inv / s.factor + smooth * inv
        inv = np.where(wavelen > low_wavelen, inv / s.factor, np.where(wavelen < high_wavelen, inv, mid))
    else:
        raise ValueError(f"unknown RoPE scaling {s.kind!r}")
    return inv.astype(np.float32)


def rope_tables(config: LlamaConfig, positions: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos and sin tables [..., head_dim] in float32 for integer `positions` [...]."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inverse_frequencies(config))  # [..., H/2]
    angles = jnp.concatenate([angles, angles], axis=-1)  # [..., H]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotate `x` [B, T, heads, H] by tables [B, T, H]; the rotation runs in x's dtype as HF does."""
    cos = cos[:, :, None, :].astype(x.dtype)  # [B, T, 1, H]
    sin = sin[:, :, None, :].astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin
