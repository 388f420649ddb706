"""The tiny random Llama and the settings that the pipeline tests share (test_staged, test_batch)."""

from __future__ import annotations

import numpy as np
from hf_tiny import _our_config, params_from_hf, tiny_hf_model, tiny_tokenizer

from pcomp_jax import Model
from pcomp_jax.decoding import Sampling
from pcomp_jax.parallelcomp.config import ParallelCompConfig
from pcomp_jax.parallelcomp.prompts import PromptTemplate

WORDS = "alpha beta gamma delta river stone cloud paper garden silver window orange market yellow music".split()
TEMPLATE = PromptTemplate(prefix="Read: ", suffix=" Q: {question} A:")


def text(n_words: int, seed: int = 0) -> str:
    return " ".join(np.random.default_rng(seed).choice(WORDS, n_words))


def tiny_model(bos: bool) -> Model:
    """2 layers, 4 query and 2 KV heads, float32, the plain-jnp attention."""
    hf = tiny_hf_model("llama", heads=4, kv_heads=2, layers=2)
    tokenizer = tiny_tokenizer(bos=bos)
    return Model(params=params_from_hf(hf), config=_our_config(hf), tokenizer=tokenizer, attention_backend="reference")


def cfg(**kw) -> ParallelCompConfig:
    """48-token chunks, keep 2, groups of 2, no chat template, 6 new tokens; `kw` overrides."""
    base = dict(chunk_tokens=48, keep_chunks=2, chunk_batch=2, chat=False, sampling=Sampling(max_new_tokens=6))
    return ParallelCompConfig(**{**base, **kw})


def same(got, want, atol: float = 2e-4) -> None:
    """Two results agree: answer, kept chunks, cache and positions exactly, chunk scores to float rounding."""
    assert got.tokens == want.tokens and got.text == want.text
    for key in ("kept_chunks", "num_chunks", "cache_tokens_per_layer", "question_position", "question_tokens"):
        assert got.stats[key] == want.stats[key], key
    np.testing.assert_allclose(got.stats["chunk_scores"], want.stats["chunk_scores"], atol=atol)
