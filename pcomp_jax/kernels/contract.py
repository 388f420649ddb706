"""The contract every chunk-attention kernel meets, and its plain-jnp reference.

`chunk_attention(q, k, v, lengths, obs_rows)` over right-padded chunks: q [C, T, N, H], k and v [C, T, K, H] (GQA:
query head n reads KV head n // (N / K), never repeated), lengths [C] int32, obs_rows [C, W] int32 row indices (-1:
none) or None. It returns an `AttentionOutput`:

- out [C, T, N, H] in q's dtype: causal attention, query t sees keys 0..t of its own chunk below its length; zeros
  on padding rows;
- lse [C, N, T] float32: each row's natural log-sum-exp of its scaled logits (-inf on padding rows);
- scores [C, K, T] float32, or [C, N, T] with `per_query_head=True`, or None without observation rows: each key's
  softmax probability summed over the observation rows (every row with its own full normaliser), summed over the
  query heads of a KV head's group.

`reference` below is the definition; the kernels (`pcomp_jax.kernels.triton`) are tested against it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class AttentionOutput(NamedTuple):
    """The contract's outputs (module docstring); scores is None when no observation rows were given."""

    out: jax.Array
    lse: jax.Array
    scores: jax.Array | None


def reference(q, k, v, lengths, obs_rows=None, *, per_query_head=False):
    """The same three outputs in plain jnp, materialising [C, N, T, T] (tests and small benchmarks)."""
    c, t, n, h = q.shape
    kh = k.shape[2]
    kr, vr = (jnp.repeat(x, n // kh, axis=2) for x in (k, v))
    logits = jnp.einsum("ctnh,csnh->cnts", q, kr, preferred_element_type=jnp.float32) * h**-0.5
    pos = jnp.arange(t)
    key_ok = (pos[None, :] < lengths[:, None])[:, None, None, :]  # [C, 1, 1, S]
    visible = (pos[None, :] <= pos[:, None])[None, None] & key_ok  # [C, 1, T, S]
    row_ok = (pos[None, :] < lengths[:, None])[:, None, :]  # [C, 1, T]
    logits = jnp.where(visible, logits, -jnp.inf)
    lse = jax.nn.logsumexp(logits, axis=-1)
    # every row's own normaliser (observation rows may sit in the padding); -inf only where a chunk is empty
    probs = jnp.where(visible, jnp.exp(logits - jnp.where(jnp.isfinite(lse), lse, 0.0)[..., None]), 0.0)
    out = jnp.einsum("cnts,csnh->ctnh", probs.astype(vr.dtype), vr, preferred_element_type=jnp.float32)
    out = jnp.where(row_ok.transpose(0, 2, 1)[..., None], out, 0.0).astype(q.dtype)
    lse = jnp.where(row_ok, lse, -jnp.inf)
    if obs_rows is None:
        return AttentionOutput(out, lse, None)
    rows = jnp.clip(obs_rows, 0, t - 1)
    seen = jnp.take_along_axis(probs, rows[:, None, :, None], axis=2)  # [C, N, W, S]
    seen = jnp.where((obs_rows >= 0)[:, None, :, None], seen, 0.0)
    scores = seen.sum(axis=2)
    if not per_query_head:
        scores = scores.reshape(c, kh, n // kh, t).sum(axis=2)
    return AttentionOutput(out, lse, scores)
