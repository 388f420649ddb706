"""The attention-bias analysis (pcomp_jax/analysis.py) on the tiny random Llama: its attention is the question's
attention of `generate`'s second prefill, before and after calibration."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_pipeline import TEMPLATE, cfg, text, tiny_model

import pcomp_jax
from pcomp_jax import Calibration, InputError, analysis

QUESTION = "where is the stone"
# every key of the first four of each head: removed in layer 1 whatever the attention (a tiny threshold)
SINK = Calibration(region="sink", layers=(1, 1), threshold=1e-6, region_width=4)


@pytest.fixture(scope="module")
def setup():
    model = tiny_model(bos=True)
    context = text(150, seed=3)
    sel = analysis.select(model, context, QUESTION, cfg(), template=TEMPLATE)
    plain = analysis.question_attention(model, sel, width=8)
    calibrated = analysis.question_attention(model, sel, SINK, width=8)
    return model, context, sel, plain, calibrated


def test_attention_is_a_distribution_over_visible_keys(setup):
    _, _, sel, plain, _ = setup
    layers, heads, slots = plain.head_weights.shape
    np.testing.assert_allclose(plain.head_weights.sum(-1), 1.0, atol=1e-5)
    group = heads // plain.valid.shape[-1]
    sees = plain.valid[:, :, np.arange(heads) // group].transpose(0, 2, 1)  # [L, N, S]: query head n reads KV n // G
    assert np.all(plain.head_weights[~sees] == 0)
    assert not plain.removed().any()
    np.testing.assert_allclose(plain.region_mass().sum(-1), 1.0, atol=1e-5)
    assert plain.region_mass().shape == (layers, len(analysis.REGIONS))
    # the merged cache: kept chunks side by side, one BOS (the first chunk's), then the question
    assert [c for c in dict.fromkeys(plain.chunk.tolist()) if c >= 0] == sel.kept
    assert plain.seen[plain.chunk >= 0].sum() == sum(sel.prompt.context_len(i) for i in sel.kept) - (len(sel.kept) - 1)
    assert (plain.region == analysis.REGIONS.index("question")).sum() == sel.question.shape[1]  # padding included


def test_calibration_gives_nothing_to_removed_keys(setup):
    _, _, _, plain, calibrated = setup
    removed = calibrated.removed()  # [L, S, K]
    assert not removed[0].any()  # layer 0 is outside the calibrated layers
    assert removed[1].sum(0).tolist() == [4, 4]  # the first four valid keys of each KV head
    heads = calibrated.head_weights.shape[1]
    gone = removed[:, :, np.arange(heads) // (heads // removed.shape[-1])].transpose(0, 2, 1)  # [L, N, S]
    assert np.all(calibrated.head_weights[gone] == 0)
    np.testing.assert_allclose(calibrated.head_weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(calibrated.head_weights[0], plain.head_weights[0], atol=1e-6)  # before it: unchanged
    np.testing.assert_array_equal(calibrated.region, plain.region)


def test_kept_chunks_and_answers_match_generate(setup):
    model, context, sel, _, _ = setup
    assert sel.prompt.num_chunks > len(sel.kept) == 2
    for calibration in (None, SINK):
        want = pcomp_jax.generate(model, context, QUESTION, cfg(calibration=calibration), template=TEMPLATE)
        got = analysis.answer(model, sel, calibration)
        assert got.stats["kept_chunks"] == want.stats["kept_chunks"] == sel.kept
        assert got.tokens == want.tokens
        assert got.stats["cache_tokens_per_layer"] == want.stats["cache_tokens_per_layer"]
    np.testing.assert_allclose(sel.scores, want.stats["chunk_scores"], atol=1e-4)


def test_a_margin_reads_only_the_near_ties(setup):
    """With keep 3 and a margin of 0 the selection keeps the best chunk alone: its attention map holds that chunk's
    slots only, and the answer is `generate`'s with the same settings."""
    model, context, _, _, _ = setup
    config = cfg(keep_chunks=3, keep_margin=0.0)
    sel = analysis.select(model, context, QUESTION, config, template=TEMPLATE)
    assert len(sel.kept) == 1 and sel.kept == [int(np.argmin(sel.scores))]
    amap = analysis.question_attention(model, sel, width=8)
    assert [c for c in dict.fromkeys(amap.chunk.tolist()) if c >= 0] == sel.kept
    empty = amap.chunk == -2  # the two dropped entries' slots: nothing visible, nothing attended, not the question
    assert empty.sum() == 2 * sel.plan.chunk_slots and not amap.seen[empty].any() and not amap.weights[:, empty].any()
    assert (amap.region == analysis.REGIONS.index("question")).sum() == sel.question.shape[1]
    want = pcomp_jax.generate(model, context, QUESTION, config, template=TEMPLATE)
    got = analysis.answer(model, sel)
    assert got.stats["kept_chunks"] == want.stats["kept_chunks"] == sel.kept and got.tokens == want.tokens


def test_bad_arguments(setup):
    model, _, sel, _, _ = setup
    with pytest.raises(InputError, match="rows must be between 1"):
        analysis.question_attention(model, sel, rows=0)
    with pytest.raises(InputError, match="width must be at least 1"):
        analysis.question_attention(model, sel, width=0)
    with pytest.raises(InputError, match="go past the model's last layer"):
        analysis.question_attention(model, sel, Calibration(layers=(0, 5)))
