"""Scores with fixed shapes: the question NLL of a chunk (chunk eviction) and the observation-window attention each
cached token receives (token eviction). Selection lives in eviction.py / select.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from pcomp_jax.attention import MASK_VALUE


def question_nll(logits: jax.Array, targets: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean NLL of the question tokens: I_c of Part 1.3 (Part 2, D.1).

    logits [..., Q, V] float32 predicting `targets` [..., Q]; valid [..., Q] masks question padding. The mean is
    over the valid question tokens (the official code divides by count - 1, which ranks chunks identically).
    """
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [..., Q]
    return jnp.sum(jnp.where(valid, nll, 0.0), -1) / jnp.maximum(jnp.sum(valid, -1), 1)


def window_attention(queries: jax.Array, keys: jax.Array, key_valid: jax.Array, q_slots: jax.Array) -> jax.Array:
    """Attention mass each key receives from the observation rows, summed over the rows (Part 2, E.2).

    queries [L, W, N, H] post-RoPE; keys [L, S, K, H]; key_valid [L, S, K]; q_slots [W] or [L, W] the rows' slots (a
    row sees keys at slots <= its own). Probabilities use each row's full softmax normaliser. Returns [L, N, S] float32.
    """
    layers, w, n, h = queries.shape
    kh = keys.shape[2]
    q = queries.reshape(layers, w, kh, n // kh, h)  # [L, W, K, G, H]
    logits = jnp.einsum("lwkgh,lskh->lkgws", q, keys, preferred_element_type=jnp.float32) * h**-0.5
    visible = jnp.arange(keys.shape[1]) <= q_slots[..., None]  # [W, S] or [L, W, S]
    visible = visible.reshape(-1, 1, 1, w, keys.shape[1])  # [1 or L, 1, 1, W, S]
    visible = visible & key_valid.transpose(0, 2, 1)[:, :, None, None, :]  # [L, K, 1, W, S]
    probs = jax.nn.softmax(jnp.where(visible, logits, MASK_VALUE), axis=-1)
    probs = jnp.where(visible, probs, 0.0)
    return probs.sum(axis=3).reshape(layers, n, -1)  # [L, N, S]


def max_pool(scores: jax.Array, candidates: jax.Array, kernel: int) -> jax.Array:
    """Max-pool [..., S] scores over a window of `kernel` within the candidate set; non-candidates are -inf."""
    s = jnp.where(candidates, scores, -jnp.inf)
    if kernel > 1:
        pad = [(0, 0)] * (s.ndim - 1) + [(kernel // 2, kernel // 2)]
        s = lax.reduce_window(s, -jnp.inf, lax.max, (1,) * (s.ndim - 1) + (kernel,), (1,) * s.ndim, pad)
    return jnp.where(candidates, s, -jnp.inf)
