"""Named model shapes for benchmarks, random weights made on the device, and the arithmetic of the columns."""

from __future__ import annotations

import dataclasses
import functools

from pcomp_jax.config import LlamaConfig

SHAPES = {
    "llama3-8b": LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        rope_theta=500000.0,
        max_position_embeddings=8192,
        bos_token_id=128000,
        eos_token_ids=(128001,),
    ),
    "smollm2": LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        rope_theta=100000.0,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_ids=(2,),
    ),
}

# Llama-3-70B: the 8B's vocabulary, RoPE and GQA 8, wider and deeper
SHAPES["llama3-70b"] = dataclasses.replace(
    SHAPES["llama3-8b"], hidden_size=8192, intermediate_size=28672, num_layers=80, num_heads=64
)
# a tiny shape for --smoke runs on the CPU
SHAPES["tiny"] = dataclasses.replace(
    SHAPES["smollm2"],
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    max_position_embeddings=2048,
)


def layer_params(c: LlamaConfig) -> int:
    """Weights of the decoder layers that every token multiplies (attention and MLP projections)."""
    attn = c.hidden_size * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    return c.num_layers * (attn + mlp)


def weight_bytes(c: LlamaConfig, itemsize: int = 2) -> int:
    """Bytes one decode step reads of the weights: the layers, the LM head and one embedding row."""
    return itemsize * (layer_params(c) + c.vocab_size * c.hidden_size + c.hidden_size)


def kv_bytes_per_token(c: LlamaConfig, itemsize: int = 2) -> int:
    return itemsize * 2 * c.num_layers * c.num_kv_heads * c.head_dim


def prefill_flops(c: LlamaConfig, sequences: list[int], logits: int) -> float:
    """Model FLOPs of prefilling independent causal sequences of these lengths: 2 per weight per token, causal
    attention (QK^T and PV, half the square), and the LM head at `logits` positions."""
    linear = 2.0 * layer_params(c) * sum(sequences)
    attention = 2.0 * 2 * c.num_layers * c.num_heads * c.head_dim * sum(n * n / 2 for n in sequences)
    return linear + attention + 2.0 * c.vocab_size * c.hidden_size * logits


def random_params(config: LlamaConfig, seed: int = 0, dtype: str = "bfloat16", mesh=None) -> dict:
    """Random runtime params of `config` made on the default device one array at a time, so that making them needs
    no more memory than the params and one float32 array (tracing `init_params` whole would hold every layer's
    float32 draws at once: 56 GiB of temporaries for the Llama-3-8B shape by XLA's memory analysis on the CPU, which
    the benchmark's process-wide peak would then report). Kernels and embeddings are normal with variance 1/fan-in,
    norms one, biases zero. On `mesh`, each array is made in its shards (`pcomp_jax.sharding.RULES`), so a model
    larger than one device can be made."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding

    from pcomp_jax.model import init_params
    from pcomp_jax.sharding import param_axes, spec

    shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0), jnp.dtype(dtype)))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    keys = jax.random.split(jax.random.key(seed), len(leaves))

    @functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
    def make(key, kind, shape, dtype, fan_in, sharding):
        if kind == "ones":
            x = jnp.ones(shape, dtype)
        elif kind == "zeros":
            x = jnp.zeros(shape, dtype)
        else:
            x = (jax.random.normal(key, shape, jnp.float32) * fan_in**-0.5).astype(dtype)
        return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)

    out = []
    for (path, leaf), key in zip(leaves, keys, strict=True):
        name = path[-1].key
        keys_ = tuple(str(k.key) for k in path)
        sharding = None if mesh is None else NamedSharding(mesh, spec(param_axes(keys_), leaf.shape, mesh))
        kind = {"scale": "ones", "bias": "zeros"}.get(name, "normal")
        fan_in = leaf.shape[1] if name == "embedding" else leaf.shape[0]  # kernels [D_in, ...]; embedding [V, D]
        out.append(make(key, kind, leaf.shape, leaf.dtype, fan_in, sharding))
    return jax.tree_util.tree_unflatten(treedef, out)
