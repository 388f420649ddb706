"""The stored (checkpoint) and runtime (forward) param layouts convert into each other exactly."""

import jax
import numpy as np
import pytest
from hf_tiny import _our_config, stored_params_from_hf, tiny_hf_model

import pcomp_jax
from pcomp_jax.checkpoint import load_params, read_config
from pcomp_jax.layout import stored_shapes, to_runtime, to_stored


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    "kind, heads, kv_heads, bias, tied",
    [
        ("llama", 4, 2, False, False),
        ("llama", 8, 2, True, True),
        ("qwen2", 4, 1, False, True),
        ("llama", 4, 4, False, True),
    ],
)
def test_round_trip_and_shapes(kind, heads, kv_heads, bias, tied):
    model = tiny_hf_model(kind, heads=heads, kv_heads=kv_heads, bias=bias, tied=tied)
    config = _our_config(model)
    stored = stored_params_from_hf(model)
    shapes = jax.tree.map(np.shape, stored)
    assert shapes == stored_shapes(config)
    runtime = to_runtime(stored, config)
    want = jax.eval_shape(lambda: pcomp_jax.init_params(config, jax.random.key(0)))
    assert jax.tree.map(np.shape, runtime) == jax.tree.map(lambda x: x.shape, want)
    assert_trees_equal(to_stored(runtime, config), stored)


def test_query_heads_keep_their_kv_head():
    """Fused per KV head: query head n sits in KV head n // G's block, then that head's key and value."""
    model = tiny_hf_model("llama", heads=8, kv_heads=2)
    config = _our_config(model)
    stored = stored_params_from_hf(model)
    qkv = to_runtime(stored, config)["layers_1"]["attn"]["qkv_proj"]["kernel"]  # [D, K, G + 2, H]
    h, g = config.head_dim, 4
    q = stored["layers"]["attn"]["q_proj"]["kernel"][1]
    k = stored["layers"]["attn"]["k_proj"]["kernel"][1]
    for n in range(8):
        np.testing.assert_array_equal(qkv[:, n // g, n % g], q[:, n * h : (n + 1) * h])
    np.testing.assert_array_equal(qkv[:, 1, g], k[:, h : 2 * h])


def test_save_checkpoint_takes_the_runtime_layout(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    model = pcomp_jax.load(ckpt)
    config, _ = read_config(ckpt)
    out = pcomp_jax.save_checkpoint(tmp_path / "again", model.params, config, model.tokenizer)
    assert_trees_equal(load_params(out), load_params(ckpt))
    assert_trees_equal(pcomp_jax.load(out).params, model.params)
