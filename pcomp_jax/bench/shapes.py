"""Named model shapes for benchmarks, random weights made on the device, and the arithmetic of the columns."""

from __future__ import annotations

import dataclasses

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
