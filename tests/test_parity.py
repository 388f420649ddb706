"""Parity ladder against HF transformers (PyTorch) on tiny random models: RMSNorm -> RoPE -> attention ->
decoder layer -> full-model logits -> greedy generation -> cached decoding. float32, max abs diff <= 1e-4."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_tiny import _our_config, max_diff, params_from_hf, tiny_hf_model
from transformers.models.llama import modeling_llama as hf_llama

from pcomp_jax.cache import KVCache
from pcomp_jax.config import LlamaConfig
from pcomp_jax.decoding import Sampling, generate_ids
from pcomp_jax.model import Attention, DecoderLayer, RMSNorm, _make_step, forward
from pcomp_jax.rope import apply_rope, rope_tables

TOL = 1e-4
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 50000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
LINEAR_ROPE = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}
# (kind, query heads, kv heads, bias, tied): GQA group sizes 1, 2 and 4, with and without biases
VARIANTS = [
    ("llama", 4, 4, False, False),
    ("llama", 4, 2, False, True),
    ("llama", 8, 2, True, False),
    ("qwen2", 4, 1, True, False),
    ("qwen2", 4, 2, True, True),
]


def hf_causal_mask(t: int) -> torch.Tensor:
    return torch.triu(torch.full((t, t), torch.finfo(torch.float32).min), diagonal=1)[None, None]


def test_rmsnorm_matches_hf():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 64)).astype(np.float32) * 3
    w = rng.normal(size=(64,)).astype(np.float32)
    hf = hf_llama.LlamaRMSNorm(64, eps=1e-5)
    hf.weight.data = torch.tensor(w)
    ours = RMSNorm(1e-5).apply({"params": {"scale": w}}, x)
    assert max_diff(ours, hf(torch.tensor(x)).detach()) <= TOL


@pytest.mark.parametrize("rope", [None, LINEAR_ROPE, LLAMA3_ROPE], ids=["default", "linear", "llama3"])
def test_rope_matches_hf(rope):
    model = tiny_hf_model(rope_parameters=rope)
    config = _our_config(model)
    positions = np.array([[0, 1, 5, 63, 64, 200, 511]])
    hf_rot = hf_llama.LlamaRotaryEmbedding(model.config)
    cos_hf, sin_hf = hf_rot(torch.zeros(1, dtype=torch.float32), torch.tensor(positions))
    cos, sin = rope_tables(config, jnp.asarray(positions))
    assert max_diff(cos, cos_hf) <= TOL and max_diff(sin, sin_hf) <= TOL
    x = np.random.default_rng(1).normal(size=(1, 7, 3, 16)).astype(np.float32)
    q_hf, _ = hf_llama.apply_rotary_pos_emb(
        torch.tensor(x).transpose(1, 2), torch.tensor(x).transpose(1, 2), cos_hf, sin_hf
    )
    assert max_diff(apply_rope(jnp.asarray(x), cos, sin), q_hf.transpose(1, 2)) <= TOL


def _layer_inputs(model, t=9, seed=0):
    config = _our_config(model)
    x = np.random.default_rng(seed).normal(size=(2, t, config.hidden_size)).astype(np.float32)
    positions = np.tile(np.arange(t), (2, 1))
    cos_sin = hf_llama.LlamaRotaryEmbedding(model.config)(torch.tensor(x), torch.tensor(positions))
    cache = KVCache.empty(config, 2, t)
    step = _make_step(config, jnp.asarray(positions), None, cache, "reference", fresh=True)
    layer0 = params_from_hf(model)["layers_0"]
    layer_cache = (cache.k[0], cache.v[0], cache.valid[0])
    return config, x, cos_sin, step, layer0, layer_cache


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-{v[1]}q{v[2]}kv-bias{v[3]}-tied{v[4]}")
def test_attention_and_decoder_layer_match_hf(variant):
    kind, heads, kv_heads, bias, tied = variant
    model = tiny_hf_model(kind, heads=heads, kv_heads=kv_heads, bias=bias, tied=tied)
    config, x, cos_sin, step, layer0, layer_cache = _layer_inputs(model)
    hf_layer = model.model.layers[0]
    mask = hf_causal_mask(x.shape[1])
    with torch.no_grad():
        attn_hf, _ = hf_layer.self_attn(torch.tensor(x), position_embeddings=cos_sin, attention_mask=mask)
        layer_hf = hf_layer(torch.tensor(x), attention_mask=mask, position_embeddings=cos_sin)
    layer_hf = layer_hf[0] if isinstance(layer_hf, tuple) else layer_hf
    attn, (k, _, valid), _ = Attention(config).apply({"params": layer0["attn"]}, jnp.asarray(x), 0, layer_cache, step)
    assert max_diff(attn, attn_hf) <= TOL
    assert k.shape == (2, x.shape[1], kv_heads, config.head_dim)  # GQA keys stored once per KV head
    assert bool(valid.all())
    out, _, _ = DecoderLayer(config).apply({"params": layer0}, jnp.asarray(x), 0, layer_cache, step)
    assert max_diff(out, layer_hf) <= TOL


def _tokens(t=24, batch=2, seed=0):
    return np.random.default_rng(seed).integers(3, 300, size=(batch, t))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-{v[1]}q{v[2]}kv-bias{v[3]}-tied{v[4]}")
def test_full_model_logits_match_hf(variant):
    kind, heads, kv_heads, bias, tied = variant
    model = tiny_hf_model(kind, heads=heads, kv_heads=kv_heads, bias=bias, tied=tied, layers=3)
    config, params = _our_config(model), params_from_hf(model)
    tokens = _tokens()
    with torch.no_grad():
        hf_logits = model(torch.tensor(tokens)).logits.numpy()
    t = tokens.shape[1]
    out, _ = forward(
        params, config, jnp.asarray(tokens), jnp.tile(jnp.arange(t), (2, 1)), logits_at=jnp.tile(jnp.arange(t), (2, 1))
    )
    assert out.logits.dtype == jnp.float32
    assert max_diff(out.logits, hf_logits) <= TOL


def test_llama3_rope_full_model_beyond_original_window():
    model = tiny_hf_model(rope_parameters=LLAMA3_ROPE)  # original window 64; run 150 tokens
    config, params = _our_config(model), params_from_hf(model)
    tokens = _tokens(t=150, batch=1)
    with torch.no_grad():
        hf_logits = model(torch.tensor(tokens)).logits.numpy()
    out, _ = forward(params, config, jnp.asarray(tokens), jnp.arange(150)[None], logits_at=jnp.arange(150)[None])
    assert max_diff(out.logits, hf_logits) <= TOL


def test_query_blocked_attention_matches_hf():
    """Prompts longer than the reference backend's query block (512) take the blocked path."""
    model = tiny_hf_model(heads=4, kv_heads=1, layers=1)
    model.config.max_position_embeddings = 2048
    config, params = _our_config(model), params_from_hf(model)
    tokens = _tokens(t=700, batch=1)
    with torch.no_grad():
        hf_logits = model(torch.tensor(tokens)).logits.numpy()
    out, _ = forward(params, config, jnp.asarray(tokens), jnp.arange(700)[None], logits_at=jnp.arange(700)[None])
    assert max_diff(out.logits, hf_logits) <= TOL


@pytest.mark.parametrize("variant", [VARIANTS[1], VARIANTS[3]], ids=["llama-gqa2-tied", "qwen2-gqa4-bias"])
def test_greedy_generation_matches_hf_for_32_steps(variant):
    kind, heads, kv_heads, bias, tied = variant
    model = tiny_hf_model(kind, heads=heads, kv_heads=kv_heads, bias=bias, tied=tied)
    model.generation_config.eos_token_id = None  # run all 32 steps on both sides
    config, params = _our_config(model), params_from_hf(model)
    config = LlamaConfig.from_dict({**config.to_dict(), "eos_token_ids": []})
    prompt = _tokens(t=11, batch=1)[0].tolist()
    with torch.no_grad():
        hf_out = model.generate(
            torch.tensor([prompt]), do_sample=False, max_new_tokens=32, min_new_tokens=32, pad_token_id=0
        )[0, len(prompt) :].tolist()
    ours = generate_ids(params, config, prompt, Sampling(max_new_tokens=32))
    assert len(ours) == 32
    assert ours == hf_out


def test_cached_decoding_equals_full_forward():
    model = tiny_hf_model(heads=4, kv_heads=2, bias=True, layers=2)
    config, params = _our_config(model), params_from_hf(model)
    tokens = jnp.asarray(_tokens(t=20, batch=1))
    full, _ = forward(params, config, tokens, jnp.arange(20)[None], logits_at=jnp.arange(20)[None])
    # prefill 12 tokens, then feed the remaining 8 one at a time through a cache with room for them
    out, cache = forward(params, config, tokens[:, :12], jnp.arange(12)[None], logits_at=jnp.arange(12)[None])
    cache = cache.grow(8)
    steps = [out.logits]
    step = jax.jit(forward, static_argnums=(1,))
    for i in range(12, 20):
        out, cache = step(
            params, config, tokens[:, i : i + 1], jnp.array([[i]]), cache, logits_at=jnp.zeros((1, 1), jnp.int32)
        )
        steps.append(out.logits)
    assert max_diff(jnp.concatenate(steps, axis=1), full.logits) <= TOL
    assert int(cache.end) == 20 and all(bool(v.all()) for v in cache.valid)


def test_right_padding_does_not_change_valid_outputs():
    model = tiny_hf_model(heads=4, kv_heads=2)
    config, params = _our_config(model), params_from_hf(model)
    tokens = _tokens(t=10, batch=1)
    alone, cache_alone = forward(
        params, config, jnp.asarray(tokens), jnp.arange(10)[None], logits_at=jnp.arange(10)[None]
    )
    padded = np.concatenate([tokens, np.zeros((1, 6), np.int64)], axis=1)
    out, cache = forward(
        params,
        config,
        jnp.asarray(padded),
        jnp.arange(16)[None],
        token_valid=jnp.arange(16)[None] < 10,
        logits_at=jnp.arange(10)[None],
    )
    assert max_diff(out.logits, alone.logits) <= 1e-5
    k, _, valid = cache.stacked()
    assert max_diff(k[:, :, :10], cache_alone.stacked()[0]) <= 1e-5
    assert not bool(valid[:, :, 10:].any())


def test_sampling_is_seeded_and_respects_top_p():
    model = tiny_hf_model()
    config, params = _our_config(model), params_from_hf(model)
    prompt = _tokens(t=5, batch=1)[0].tolist()
    a = generate_ids(params, config, prompt, Sampling(max_new_tokens=12, temperature=1.0, seed=3))
    b = generate_ids(params, config, prompt, Sampling(max_new_tokens=12, temperature=1.0, seed=3))
    c = generate_ids(params, config, prompt, Sampling(max_new_tokens=12, temperature=1.0, seed=4))
    assert a == b and a != c
    # a tiny nucleus keeps only the argmax, so sampling degenerates to greedy
    greedy = generate_ids(params, config, prompt, Sampling(max_new_tokens=12))
    assert generate_ids(params, config, prompt, Sampling(max_new_tokens=12, temperature=1.0, top_p=1e-6)) == greedy


def test_generation_stops_at_eos():
    model = tiny_hf_model()
    config, params = _our_config(model), params_from_hf(model)
    prompt = _tokens(t=5, batch=1)[0].tolist()
    free = generate_ids(params, config, prompt, Sampling(max_new_tokens=6))
    stop = LlamaConfig.from_dict({**config.to_dict(), "eos_token_ids": [free[2]]})
    assert generate_ids(params, stop, prompt, Sampling(max_new_tokens=6)) == free[: free.index(free[2]) + 1]
    banned = generate_ids(params, stop, prompt, Sampling(max_new_tokens=6, min_new_tokens=6))
    assert len(banned) == 6 and free[2] not in banned


@pytest.mark.parametrize("variant", [VARIANTS[2], VARIANTS[3]], ids=["llama-gqa4-bias", "qwen2-gqa4"])
def test_bfloat16_is_as_accurate_as_hf_bfloat16(variant):
    """bf16 params and activations: against the float32 forward of the same (bf16-rounded) weights, our bf16 logits
    are at least as close as HF's own bf16 forward (we accumulate attention in float32)."""
    kind, heads, kv_heads, bias, tied = variant
    model = tiny_hf_model(kind, heads=heads, kv_heads=kv_heads, bias=bias, tied=tied, dtype=torch.bfloat16)
    config = _our_config(model)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), params_from_hf(model))
    tokens = _tokens()
    with torch.no_grad():
        hf16 = model(torch.tensor(tokens)).logits.float().numpy()
        ref = model.float()(torch.tensor(tokens)).logits.numpy()
    t = tokens.shape[1]
    out, cache = forward(
        params, config, jnp.asarray(tokens), jnp.tile(jnp.arange(t), (2, 1)), logits_at=jnp.tile(jnp.arange(t), (2, 1))
    )
    assert cache.k[0].dtype == jnp.bfloat16
    rel = lambda x: float(np.linalg.norm(np.asarray(x) - ref) / np.linalg.norm(ref))
    assert rel(out.logits) <= 1.5 * rel(hf16) + 1e-3, (rel(out.logits), rel(hf16))


def test_logits_at_a_few_rows_equal_those_rows_of_every_row():
    """With logits at P of T rows the last layer's output projection and MLP run on P rows only: the logits equal
    those rows of an every-row pass, in any order and with repeats, and the cache is the same."""
    model = tiny_hf_model(heads=4, kv_heads=2, bias=True, layers=3)
    config, params = _our_config(model), params_from_hf(model)
    tokens = jnp.asarray(_tokens(t=24, batch=2))
    pos = jnp.tile(jnp.arange(24), (2, 1))
    every, cache_every = forward(params, config, tokens, pos, logits_at=pos)
    rows = jnp.asarray([[23, 5, 5, 0], [1, 2, 22, 23]])
    few, cache_few = forward(params, config, tokens, pos, logits_at=rows)
    assert few.logits.shape == (2, 4, config.vocab_size) and few.hidden.shape == (2, 4, config.hidden_size)
    want = jnp.take_along_axis(every.logits, rows[:, :, None], axis=1)
    assert max_diff(few.logits, want) <= 1e-6
    for a, b in zip(cache_few.stacked(), cache_every.stacked(), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    none, _ = forward(params, config, tokens, pos)
    assert none.logits is None and none.hidden.shape == (2, 24, config.hidden_size)


def test_bfloat16_dense_layers_accumulate_in_float32_on_the_cpu():
    """On a CPU a bf16 dense layer is one float32-accumulated dot rounded once to bf16 (XLA's CPU runs that at ~1.9x
    its float32 rate, a bf16-output dot below it): the lowered dot yields f32, and the result equals the float32
    product of the same operands rounded to bf16, to within one bf16 step; float32 layers keep XLA's own dot."""
    import flax.linen as nn

    from pcomp_jax.model import dense_dot

    assert jax.default_backend() == "cpu"
    assert dense_dot(jnp.float32) is jax.lax.dot_general
    x = jax.random.normal(jax.random.key(0), (4, 96), jnp.bfloat16)
    layer = nn.Dense(
        80, use_bias=False, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, dot_general=dense_dot(jnp.bfloat16)
    )
    params = layer.init(jax.random.key(1), x)
    apply = jax.jit(layer.apply)
    assert "xbf16>, tensor<96x80xbf16>) -> tensor<4x80xf32>" in apply.lower(params, x).as_text()
    got = apply(params, x)
    want = (x.astype(jnp.float32) @ params["params"]["kernel"].astype(jnp.float32)).astype(jnp.bfloat16)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=2**-7, atol=0)
