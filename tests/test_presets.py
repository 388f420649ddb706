"""The defaults a user gets with no flags: presets keyed on the model (parallelcomp/presets.py)."""

from __future__ import annotations

import dataclasses
import math

import jax
import pytest

from pcomp_jax.bench.shapes import SHAPES
from pcomp_jax.model import init_params
from pcomp_jax.parallelcomp.config import ParallelCompConfig
from pcomp_jax.parallelcomp.presets import param_count, preset_for, resolve


def counted(config) -> int:
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize(
    "config",
    [
        SHAPES["smollm2"],
        dataclasses.replace(SHAPES["smollm2"], num_layers=2, tie_word_embeddings=False, qkv_bias=True),
        dataclasses.replace(SHAPES["llama3-8b"], num_layers=2, o_bias=True),
    ],
    ids=["smollm2", "untied-qkv-bias", "llama3-o-bias"],
)
def test_param_count_is_the_params_the_model_has(config):
    assert param_count(config) == counted(config)


def test_smollm2_is_134_5m_parameters():
    assert param_count(SHAPES["smollm2"]) == 134_515_008  # SmolLM2-135M's published count


def test_presets_small_model_measured_large_model_the_papers():
    small = preset_for(SHAPES["smollm2"])
    assert (small.chunk_tokens, small.keep_chunks, small.keep_margin, small.nll_bias) == (512, 2, None, 2.0)
    large = preset_for(SHAPES["llama3-8b"])
    assert (large.chunk_tokens, large.keep_chunks, large.keep_margin, large.nll_bias) == (7600, 3, None, None)
    llama2 = dataclasses.replace(SHAPES["llama3-8b"], max_position_embeddings=4096, rope_scaling=None)
    assert preset_for(llama2).chunk_tokens == 3600
    tiny_window = dataclasses.replace(SHAPES["smollm2"], max_position_embeddings=512)
    assert preset_for(tiny_window).chunk_tokens == 256  # half the window: room for the question and the answer


def test_resolve_fills_only_what_is_unset():
    model = SHAPES["smollm2"]
    assert resolve(ParallelCompConfig(), model).chunk_tokens == 512
    assert resolve(ParallelCompConfig(), model).keep_chunks == 2
    assert resolve(ParallelCompConfig(), model).keep_margin is None
    assert resolve(ParallelCompConfig(keep_margin=0.5), model).keep_margin == 0.5
    assert resolve(ParallelCompConfig(), model).nll_bias == 2.0
    assert resolve(ParallelCompConfig(nll_bias=0), model).nll_bias == 0.0  # equal weights, asked for
    explicit = ParallelCompConfig(chunk_tokens=1000, keep_chunks=5)
    assert resolve(explicit, model) is explicit
    mixed = resolve(ParallelCompConfig(keep_chunks=1), model)
    assert (mixed.chunk_tokens, mixed.keep_chunks, mixed.keep_margin) == (512, 1, None)  # an explicit keep: no margin
    assert mixed.nll_bias is None  # nor a bias: that many chunks as equals, as in the paper
    assert resolve(ParallelCompConfig(), SHAPES["llama3-8b"]).keep_margin is None  # the paper's keep rule
    assert resolve(ParallelCompConfig(), SHAPES["llama3-8b"]).nll_bias is None


def test_a_call_with_no_settings_uses_the_models_preset(tiny_checkpoint):
    from pcomp_jax.parallelcomp.pipeline import generate
    from pcomp_jax.pretrained import load

    model = load(tiny_checkpoint[0])
    preset = preset_for(model.config)
    result = generate(model, "one two three four five six seven eight " * 40, "What comes after one?")
    assert result.stats["num_chunks"] >= 2
    assert result.stats["chunk_budget"] == preset.chunk_tokens
    assert max(result.stats["chunk_tokens"]) <= preset.chunk_tokens
    assert 1 <= len(result.stats["kept_chunks"]) <= min(preset.keep_chunks, result.stats["num_chunks"])
    assert result.stats["keep_margin"] == preset.keep_margin
    assert result.stats["nll_bias"] == preset.nll_bias
