"""Scores with fixed shapes: the question NLL of a chunk (chunk eviction) and max- or average-pooling of the
observation scores (token eviction; the scores themselves come from the prefill, see attention.observation_scores).
Selection lives in eviction.py / select.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax


def question_nll(logits: jax.Array, targets: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean NLL of the question tokens: I_c of docs/ALGORITHM.md 1.3 (paper, chunk eviction).

    logits [..., Q, V] float32 predicting `targets` [..., Q]; valid [..., Q] masks question padding. The mean is
    over the valid question tokens (the official code divides by count - 1, which ranks chunks identically; B17).
    """
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [..., Q]
    return jnp.sum(jnp.where(valid, nll, 0.0), -1) / jnp.maximum(jnp.sum(valid, -1), 1)


def max_pool(scores: jax.Array, candidates: jax.Array, kernel: int) -> jax.Array:
    """Max-pool [..., S] scores over a window of `kernel` within the candidate set; non-candidates are -inf."""
    s = jnp.where(candidates, scores, -jnp.inf)
    if kernel > 1:
        pad = [(0, 0)] * (s.ndim - 1) + [(kernel // 2, kernel // 2)]
        s = lax.reduce_window(s, -jnp.inf, lax.max, (1,) * (s.ndim - 1) + (kernel,), (1,) * s.ndim, pad)
    return jnp.where(candidates, s, -jnp.inf)


def avg_pool(scores: jax.Array, candidates: jax.Array, kernel: int) -> jax.Array:
    """Average-pool [..., S] scores over a window of `kernel` slots, zeros past both ends (what kvpress's SnapKV
    does with `avg_pool1d`, neighbours counted whether or not they are candidates); non-candidates are -inf."""
    s = scores
    if kernel > 1:
        pad = [(0, 0)] * (s.ndim - 1) + [(kernel // 2, kernel // 2)]
        s = lax.reduce_window(s, 0.0, lax.add, (1,) * (s.ndim - 1) + (kernel,), (1,) * s.ndim, pad) / kernel
    return jnp.where(candidates, s, -jnp.inf)
