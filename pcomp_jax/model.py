"""A pure-functional Flax Linen Llama-family decoder (Llama 2/3/3.1, Qwen2/2.5, SmolLM2).

`forward(params, config, tokens, positions, cache, ...)` returns `(Output, cache)`. Params are a plain nested dict
in the runtime layout of `pcomp_jax.layout` (one subtree per layer, q/k/v and gate/up fused); checkpoints keep the
stored layout and `pcomp_jax.load` converts. Layers run in a Python loop over their own weight arrays, each with
its own cache buffers (see layout.py and cache.py for why).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from pcomp_jax.attention import attend, resolve_backend
from pcomp_jax.cache import KVCache
from pcomp_jax.config import LlamaConfig
from pcomp_jax.rope import apply_rope, rope_tables

Params = dict[str, Any]


def _accumulate_f32(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """A dense layer's dot in float32, rounded once to the inputs' dtype."""
    out = lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=jnp.float32)
    return out.astype(lhs.dtype)


def dense_dot(dtype):
    """The dense layers' dot: bf16 on a CPU accumulates in float32 (XLA's CPU runs bf16 x bf16 -> f32 at ~1.9x its
    float32 rate, bf16 -> bf16 below it); elsewhere XLA's own (GPU dots already accumulate in float32)."""
    if jnp.dtype(dtype) == jnp.bfloat16 and jax.default_backend() == "cpu":
        return _accumulate_f32
    return lax.dot_general


class RMSNorm(nn.Module):
    """x / rms(x) * scale, normalised in float32 and cast back before the scale (as HF does)."""

    eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.dtype)
        xf = x.astype(jnp.float32)
        xf = xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return scale * xf.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class _Step:
    """What every layer needs besides its own cache slice (broadcast across the layer scan)."""

    cos: jax.Array  # [B, T, H]
    sin: jax.Array  # [B, T, H]
    token_valid: jax.Array  # [B, T] bool
    end: jax.Array  # int32 scalar: slot of the first new token
    score_rows: jax.Array | None  # [B, W] indices into T of the observation rows for attention scores, or None
    fresh: bool  # static: the cache held nothing before this call, so attention is plain causal over new tokens
    backend: str  # static: concrete attention backend
    key_filter: Callable | None  # static: see `forward`
    key_bias: jax.Array | None = None  # [B, S] float32 added to the logits toward each cache slot (`KVCache.bias`)


jax.tree_util.register_dataclass(
    _Step,
    data_fields=["cos", "sin", "token_valid", "end", "score_rows", "key_bias"],
    meta_fields=["fresh", "backend", "key_filter"],
)


class Attention(nn.Module):
    config: LlamaConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, layer, layer_cache, step: _Step, rows=None):
        c = self.config
        b, t, _ = x.shape
        g = c.num_heads // c.num_kv_heads
        qkv = nn.DenseGeneral(
            (c.num_kv_heads, g + 2, c.head_dim),
            use_bias=c.qkv_bias,
            dtype=self.dtype,
            param_dtype=self.dtype,
            dot_general=dense_dot(self.dtype),
            name="qkv_proj",
        )(x)  # [B, T, K, G + 2, H]: per KV head its G query heads, its key, its value
        q = qkv[:, :, :, :g].reshape(b, t, c.num_heads, c.head_dim)  # query head n uses KV head n // G
        k, v = qkv[:, :, :, g], qkv[:, :, :, g + 1]  # [B, T, K, H]
        q = apply_rope(q, step.cos, step.sin)  # [B, T, N, H]
        k = apply_rope(k, step.cos, step.sin)  # [B, T, K, H]

        out, layer_cache, scores = attend(q, k, v, layer, layer_cache, step)
        out = out.reshape(b, t, c.num_heads * c.head_dim)
        if rows is not None:  # only these rows go on (see DecoderLayer)
            out = _take_rows(out, rows)
        out = nn.Dense(
            c.hidden_size,
            use_bias=c.o_bias,
            dtype=self.dtype,
            param_dtype=self.dtype,
            dot_general=dense_dot(self.dtype),
            name="o_proj",
        )(out)
        return out, layer_cache, scores


class MLP(nn.Module):
    config: LlamaConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.config
        gate_up = nn.DenseGeneral(
            (2, c.intermediate_size),
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.dtype,
            dot_general=dense_dot(self.dtype),
            name="gate_up_proj",
        )(x)  # [B, T, 2, F]
        h = nn.silu(gate_up[..., 0, :]) * gate_up[..., 1, :]  # [B, T, F]
        return nn.Dense(
            c.hidden_size,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.dtype,
            dot_general=dense_dot(self.dtype),
            name="down_proj",
        )(h)


def _take_rows(x, rows):
    """x [B, T, ...] at rows [B, P] -> [B, P, ...]."""
    return jnp.take_along_axis(x, rows.reshape(rows.shape + (1,) * (x.ndim - 2)), axis=1)


class DecoderLayer(nn.Module):
    """One block. With `rows` [B, P], its keys and values (the cache) cover every token, but only those rows leave
    the block: the output projection and the MLP run on P rows instead of T (the last layer of a prefill that only
    needs logits at a few positions; for a chunk scored by its question that is ~1/num_layers of the linear work)."""

    config: LlamaConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, layer, layer_cache, step: _Step, rows=None):
        eps = self.config.rms_norm_eps
        with jax.named_scope("attention"):
            h, layer_cache, scores = Attention(self.config, self.dtype, name="attn")(
                RMSNorm(eps, self.dtype, name="attn_norm")(x), layer, layer_cache, step, rows
            )
        if rows is not None:
            x = _take_rows(x, rows)
        x = x + h
        with jax.named_scope("mlp"):
            x = x + MLP(self.config, self.dtype, name="mlp")(RMSNorm(eps, self.dtype, name="mlp_norm")(x))
        return x, layer_cache, scores


@struct.dataclass
class Output:
    """logits [B, P, V] float32 at the requested positions (None if none were requested); hidden: the final-norm
    hidden states, [B, T, D], or [B, P, D] at those positions when logits were requested (see DecoderLayer);
    scores [layers, B, N, S] float32 observation scores of the `score_rows` (None if not requested)."""

    logits: jax.Array | None
    hidden: jax.Array
    scores: jax.Array | None = None


class Llama(nn.Module):
    config: LlamaConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, cache: KVCache, step: _Step, logits_at=None):
        c = self.config
        embed = nn.Embed(c.vocab_size, c.hidden_size, dtype=self.dtype, param_dtype=self.dtype, name="embed")
        x = embed(tokens)  # [B, T, D]
        ks, vs, valids, scores = [], [], [], []
        last = c.num_layers - 1
        for i in range(c.num_layers):  # each layer reads its own weight and cache buffers in place
            x, (k, v, valid), s = DecoderLayer(c, self.dtype, name=f"layers_{i}")(
                x, i, (cache.k[i], cache.v[i], cache.valid[i]), step, logits_at if i == last else None
            )
            ks.append(k), vs.append(v), valids.append(valid), scores.append(s)
        x = RMSNorm(c.rms_norm_eps, self.dtype, name="final_norm")(x)
        cache = cache.replace(k=tuple(ks), v=tuple(vs), valid=tuple(valids), end=cache.end + tokens.shape[1])
        scores = None if scores[0] is None else jnp.stack(scores)  # [layers, B, N, S]
        logits = None
        if logits_at is not None:
            h = x  # [B, P, D], already at logits_at: never [T, V] for long inputs
            if c.tie_word_embeddings:
                logits = embed.attend(h)
            else:
                logits = nn.Dense(
                    c.vocab_size, use_bias=False, dtype=self.dtype, param_dtype=self.dtype, name="lm_head"
                )(h)
            logits = logits.astype(jnp.float32)
        return Output(logits=logits, hidden=x, scores=scores), cache


def init_params(config: LlamaConfig, key: jax.Array, dtype=jnp.float32) -> Params:
    """Random params (Flax default initialisers) in the runtime layout (layout.py), for tests and shape checks."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    cache = KVCache.empty(config, 1, 1, dtype)
    step = _make_step(config, jnp.zeros((1, 1), jnp.int32), None, cache, "reference", fresh=True)
    variables = Llama(config, dtype).init(key, tokens, cache, step, logits_at=jnp.zeros((1, 1), jnp.int32))
    return variables["params"]


def _make_step(config, positions, token_valid, cache, backend, fresh, score_rows=None, key_filter=None):
    cos, sin = rope_tables(config, positions)
    if token_valid is None:
        token_valid = jnp.ones(positions.shape, bool)
    return _Step(
        cos=cos,
        sin=sin,
        token_valid=token_valid,
        end=cache.end,
        score_rows=score_rows,
        fresh=fresh,
        backend=backend,
        key_filter=key_filter,
        key_bias=None if fresh else cache.bias,
    )


def param_dtype(params: Params):
    return params["embed"]["embedding"].dtype


def forward(
    params: Params,
    config: LlamaConfig,
    tokens: jax.Array,
    positions: jax.Array,
    cache: KVCache | None = None,
    *,
    token_valid: jax.Array | None = None,
    logits_at: jax.Array | None = None,
    score_rows: jax.Array | None = None,
    key_filter: Callable | None = None,
    attention_backend: str = "auto",
) -> tuple[Output, KVCache]:
    """Run the decoder on new tokens and return their outputs and the updated cache.

    tokens, positions: [B, T] int32; positions are RoPE positions, free of any relation to cache slots.
    cache: an existing cache to append to at slot `cache.end` (must have room), or None to start a fresh one of
      exactly T slots (plain causal attention over the new tokens; the fast path for a chunk prefill).
    token_valid: [B, T] bool, False for right padding (a prefix of True per row); padded tokens are stored as invalid
      keys and their attention outputs are zeros.
    logits_at: [B, P] int32 indices into T at which to return logits (None: no logits, only hidden states).
    score_rows: [B, W] int32 indices into T of observation rows (others, e.g. -1, are ignored): every layer returns,
      per query head, the softmax mass each key receives from these rows, summed over them (`Output.scores`, for
      token eviction). On a GPU a fresh prefill gets them from the Pallas kernels (see attention.fresh_attention).
    key_filter: static hook `(layer, q [B, T, N, H], q_valid [B, T], q_slots [T], k_cache [B, S, K, H],
      valid [B, S, K]) -> valid`, called in every layer after the new keys are written and before attention; it may
      only invalidate keys (attention calibration uses it). Requires an existing cache.
    Pure and jit/vmap-friendly; `attention_backend` and `key_filter` are static.
    """
    fresh = cache is None
    if fresh and key_filter is not None:
        raise ValueError("key_filter needs an existing cache")
    if fresh:
        cache = KVCache.empty(config, tokens.shape[0], tokens.shape[1], param_dtype(params))
    step = _make_step(
        config, positions, token_valid, cache, resolve_backend(attention_backend), fresh, score_rows, key_filter
    )
    return Llama(config, param_dtype(params)).apply({"params": params}, tokens, cache, step, logits_at)
