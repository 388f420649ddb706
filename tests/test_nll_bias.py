"""`ParallelCompConfig.nll_bias`: the kept chunks weighed by their question NLL through a per-slot logit bias
(`KVCache.bias`), checked against plain formulas and against the settings it interpolates between."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_pipeline import TEMPLATE, cfg, text, tiny_model

from pcomp_jax.attention import decode_attention, reference_attention
from pcomp_jax.parallelcomp.config import ParallelCompConfig, PipelineConfigError
from pcomp_jax.parallelcomp.merge import merged_cache
from pcomp_jax.parallelcomp.pipeline import generate
from pcomp_jax.parallelcomp.select import ChunkSet

QUESTION = "what is the key?"


def plain_attention(q, k, v, q_slots, valid, bias):
    """The formula, one query head at a time: softmax(q.k / sqrt(H) + bias) over the visible keys."""
    b, t, n, h = q.shape
    g = n // k.shape[2]
    out = np.zeros(q.shape, np.float64)
    for i in range(b):
        for head in range(n):
            kv = head // g
            logits = q[i, :, head] @ k[i, :, kv].T / np.sqrt(h) + bias[i][None, :]  # [T, S]
            visible = (np.arange(k.shape[1])[None] <= q_slots[:, None]) & valid[i, :, kv][None]
            logits = np.where(visible, logits, -np.inf)
            p = np.exp(logits - logits.max(-1, keepdims=True))
            out[i, :, head] = (p / p.sum(-1, keepdims=True)) @ v[i, :, kv]
    return out


def test_key_bias_is_added_to_the_logits_of_both_attention_paths():
    rng = np.random.default_rng(0)
    b, s, n, kh, h = 2, 12, 4, 2, 8
    q = rng.standard_normal((b, 3, n, h)).astype(np.float32)
    k, v = (rng.standard_normal((b, s, kh, h)).astype(np.float32) for _ in range(2))
    valid = rng.random((b, s, kh)) > 0.2
    bias = rng.uniform(-4, 0, (b, s)).astype(np.float32)
    q_slots = np.array([9, 10, 11])
    got = reference_attention(*map(jnp.asarray, (q, k, v, q_slots, valid)), key_bias=jnp.asarray(bias))
    np.testing.assert_allclose(got, plain_attention(q, k, v, q_slots, valid, bias), atol=1e-5)
    one = decode_attention(jnp.asarray(q[:, :1]), jnp.asarray(k), jnp.asarray(v), 9, jnp.asarray(valid), bias)
    np.testing.assert_allclose(one, plain_attention(q[:, :1], k, v, q_slots[:1], valid, bias), atol=1e-5)
    unbiased = reference_attention(*map(jnp.asarray, (q, k, v, q_slots, valid)))
    assert not np.allclose(got, unbiased, atol=1e-3)  # the bias does change the answer


def test_merged_cache_bias_follows_each_chunks_nll_gap():
    """Chunk j's slots after the shared ones get -w * (score_j - best); shared slots, empty entries: 0."""
    chunks = ChunkSet.empty(3, 1, 4, 1, 2, jnp.float32).replace(
        score=jnp.array([1.3, 1.0, jnp.inf]), index=jnp.array([2, 5, -1], jnp.int32), context_len=jnp.full(3, 4)
    )
    cache, _ = merged_cache(chunks, shared_len=1, nll_bias=10.0)
    want = [0, -3, -3, -3, 0, 0, 0, 0, 0, 0, 0, 0]
    np.testing.assert_allclose(np.asarray(cache.bias)[0], want, atol=1e-5)
    assert merged_cache(chunks, shared_len=1)[0].bias is None


@pytest.fixture(scope="module")
def model():
    return tiny_model(bos=True)


def run(model, config):
    return generate(model, text(60), QUESTION, config, template=TEMPLATE, progress=False)


def test_nll_bias_between_equal_weights_and_the_best_chunk_alone(model):
    """0 reads the kept chunks as equals (the paper's answer); a bias so large that exp(-bias * gap) is 0 reads the
    best chunk alone (keep_margin 0's answer: the other kept chunk is there but gets no attention)."""
    paper = run(model, cfg())
    zero = run(model, cfg(nll_bias=0.0))
    assert zero.tokens == paper.tokens and zero.stats["nll_bias"] == 0.0 and paper.stats["nll_bias"] is None
    alone = run(model, cfg(keep_margin=0.0))
    huge = run(model, cfg(nll_bias=1e6))
    assert len(huge.stats["kept_chunks"]) == 2 and len(alone.stats["kept_chunks"]) == 1
    assert huge.stats["question_position"] == alone.stats["question_position"]  # full chunks: the same positions
    assert huge.tokens == alone.tokens
    assert paper.tokens != alone.tokens  # the context was chosen so that the two ends differ


def test_nll_bias_must_be_a_number_at_least_zero():
    for bad, message in [(-1.0, "nll_bias must be >= 0"), ("x", "nll_bias")]:
        with pytest.raises(PipelineConfigError, match=message):
            ParallelCompConfig(nll_bias=bad)
    assert ParallelCompConfig(nll_bias=2).nll_bias == 2.0


def test_the_bias_reaches_the_compiled_decode_step():
    """KVCache.bias is a pytree leaf: jit sees it, and grow() keeps it aligned with the slots."""
    from pcomp_jax.cache import KVCache

    cache = KVCache(
        k=(jnp.zeros((1, 3, 1, 2)),),
        v=(jnp.zeros((1, 3, 1, 2)),),
        valid=(jnp.ones((1, 3, 1), bool),),
        end=jnp.int32(3),
        bias=jnp.array([[0.0, -1.0, -2.0]]),
    )
    grown = jax.jit(lambda c: c.grow(2))(cache)
    np.testing.assert_array_equal(grown.bias, [[0.0, -1.0, -2.0, 0.0, 0.0]])
