"""`ParallelCompConfig.positions="consecutive"`: kept chunks moved to consecutive positions by rotating their keys."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from hf_tiny import _our_config, params_from_hf, tiny_hf_model, tiny_tokenizer
from test_pipeline import QUESTION, TEMPLATE, cfg, text

from pcomp_jax import Model
from pcomp_jax.cache import KVCache
from pcomp_jax.model import forward
from pcomp_jax.parallelcomp.chunking import InputError
from pcomp_jax.parallelcomp.config import ParallelCompConfig, PipelineConfigError
from pcomp_jax.parallelcomp.merge import shift_keys
from pcomp_jax.parallelcomp.pipeline import generate


@pytest.fixture(scope="module")
def model() -> Model:
    hf = tiny_hf_model("llama", heads=4, kv_heads=2, layers=2)
    return Model(params_from_hf(hf), _our_config(hf), tiny_tokenizer(bos=True), attention_backend="reference")


def keys_at(model, tokens, start: int) -> np.ndarray:
    """Cached keys [L, T, K, H] of `tokens` prefilled alone at positions start, start + 1, ..."""
    t = len(tokens)
    cache = KVCache.empty(model.config, 1, t)
    positions = jnp.arange(start, start + t)[None]
    _, cache = forward(model.params, model.config, jnp.asarray([tokens]), positions, cache)
    return np.stack([np.asarray(k[0]) for k in cache.k])


def test_shifted_keys_equal_a_prefill_at_the_later_positions(model):
    tokens = list(np.random.default_rng(0).integers(3, model.config.vocab_size, 24))
    at_zero, at_37 = keys_at(model, tokens, 0), keys_at(model, tokens, 37)
    assert np.abs(at_zero - at_37).max() > 1e-2  # the positions matter
    shifted = np.asarray(shift_keys(jnp.asarray(at_zero)[None], jnp.asarray([37]), model.config))[0]
    np.testing.assert_allclose(shifted, at_37, atol=2e-5, rtol=1e-5)


def run(model, context, **kw):
    return generate(model, context, QUESTION, cfg(**kw), template=TEMPLATE, progress=False)


def test_consecutive_positions_follow_the_kept_chunks(model):
    context = text(120)
    shared, consecutive = run(model, context), run(model, context, positions="consecutive")
    assert consecutive.stats["kept_chunks"] == shared.stats["kept_chunks"]  # selection happens before the merge
    assert len(shared.stats["kept_chunks"]) == 2
    head = shared.stats["head_tokens"]
    lengths = [head + shared.stats["chunk_tokens"][i] for i in shared.stats["kept_chunks"]]
    assert shared.stats["question_position"] == max(lengths)
    assert consecutive.stats["question_position"] == sum(lengths) - 1  # the second chunk's BOS is dropped


def test_one_kept_chunk_reads_the_same_either_way(model):
    context = text(120)
    shared = run(model, context, keep_chunks=1)
    consecutive = run(model, context, keep_chunks=1, positions="consecutive")
    assert consecutive.tokens == shared.tokens
    untimed = lambda r: {k: v for k, v in r.stats.items() if not k.endswith("seconds")}
    assert untimed(consecutive) == untimed(shared)


def test_bad_positions_are_refused(model):
    with pytest.raises(PipelineConfigError, match="unknown positions"):
        ParallelCompConfig(positions="packed")
    with pytest.raises(InputError, match="positions='consecutive' needs"):
        run(model, text(400), keep_chunks=3, chunk_tokens=200, positions="consecutive")
