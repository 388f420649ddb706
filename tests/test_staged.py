"""The staged pipeline (prefill a document once, answer many questions) gives what `generate` gives: the same kept
chunks, answers and cache, chunk scores equal to float rounding, with and without token eviction, over chunks of
several lengths, and bad input as one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_pipeline import TEMPLATE, cfg, same, text, tiny_model

from pcomp_jax import Model
from pcomp_jax.parallelcomp import staged
from pcomp_jax.parallelcomp.chunking import InputError
from pcomp_jax.parallelcomp.config import Calibration, TokenEviction
from pcomp_jax.parallelcomp.pipeline import generate, generate_from_ids
from pcomp_jax.parallelcomp.prompts import PromptTemplate

QUESTIONS = ["what is the key?", "which river is it?", "why?"]


@pytest.fixture(scope="module", params=[True, False], ids=["bos", "nobos"])
def model(request) -> Model:
    return tiny_model(bos=request.param)


@pytest.mark.parametrize(
    "config",
    [
        cfg(keep_chunks=1, chunk_batch=3, split="chars"),
        cfg(eviction=TokenEviction(capacity=12, window=4)),
        cfg(eviction=TokenEviction(capacity=9, window=3, pool="avg", pool_kernel=3)),
        cfg(calibration=Calibration(region="sink", layers=(0, 1), threshold=0.01, region_width=4)),
        cfg(shared_head=True, eviction=TokenEviction(capacity=12, window=4)),
    ],
    ids=["keep1-chars", "evict", "evict-avg", "calibration", "shared-head-evict"],
)
def test_answers_equal_generate(model, config):
    context = text(130, seed=1)  # several chunks, the last one short
    document = staged.prefill_document(model, context, config, template=TEMPLATE, progress=False)
    assert document.stats["num_chunks"] >= 3 and document.placement == "device"
    for question in QUESTIONS:
        want = generate(model, context, question, config, template=TEMPLATE, progress=False)
        got = staged.answer(model, document, question, progress=False)
        same(got, want)
        assert got.stats["staged"] is True


def test_generate_many_and_the_token_level_stages(model):
    config = cfg()
    context = text(100, seed=2)
    many = staged.generate_many(model, context, QUESTIONS, config, template=TEMPLATE, progress=False)
    for question, got in zip(QUESTIONS, many, strict=True):
        same(got, generate(model, context, question, config, template=TEMPLATE, progress=False))
    rng = np.random.default_rng(0)
    ids = rng.integers(5, model.config.vocab_size, 150).tolist()
    document = staged.prefill_document_ids(model, ids, config, progress=False)
    for q in ([7, 8, 9], rng.integers(5, 60, 20).tolist()):
        same(staged.answer_ids(model, document, q), generate_from_ids(model, ids, q, config, progress=False))


def test_bad_input_is_a_one_line_error(model):
    config = cfg()
    before = PromptTemplate(prefix="Question: {question}\n", suffix=" A:")
    with pytest.raises(InputError, match="puts the question before the document"):
        staged.prefill_document(model, text(50), config, template=before)
    document = staged.prefill_document(model, text(50), config, template=TEMPLATE, progress=False)
    with pytest.raises(InputError, match="question is empty"):
        staged.answer(model, document, "  ")
    with pytest.raises(InputError, match="answer_ids"):
        staged.answer(model, staged.prefill_document_ids(model, [5, 6, 7], config), "why?")
    evicting = staged.prefill_document(
        model, text(50), cfg(eviction=TokenEviction(capacity=8, window=30)), template=TEMPLATE, progress=False
    )
    with pytest.raises(InputError, match="eviction window"):
        staged.answer(model, evicting, "why?")


def test_document_caches_in_host_memory_give_the_same_answers(model, monkeypatch):
    """When the chunk caches do not fit the accelerator they live in host memory (numpy) and are copied back a group
    at a time per question: the same answers."""
    config = cfg()
    context = text(120, seed=4)
    on_device = staged.prefill_document(model, context, config, template=TEMPLATE, progress=False)
    monkeypatch.setattr(staged, "_placement", lambda model, nbytes: "host")
    on_host = staged.prefill_document(model, context, config, template=TEMPLATE, progress=False)
    assert on_host.placement == "host" and on_host.stats["document_cache"] == "host"
    assert all(isinstance(g.k, np.ndarray) for g in on_host.groups)
    for question in QUESTIONS[:2]:
        got = staged.answer(model, on_host, question, progress=False)
        same(got, staged.answer(model, on_device, question, progress=False))
        assert got.stats["document_cache"] == "host"


def test_documents_too_large_for_host_memory_are_recomputed(model, monkeypatch):
    """When the chunk caches would take more than half the host's free memory, none are kept (nothing is prefilled
    up front) and each question re-runs the single pass: `generate`'s answers."""
    config = cfg()
    context = text(120, seed=4)
    monkeypatch.setattr(staged, "host_free_bytes", lambda: 1000)
    document = staged.prefill_document(model, context, config, template=TEMPLATE, progress=False)
    assert document.placement == "recompute" and document.groups == () and document.stats["document_cache_bytes"] > 500
    for question in QUESTIONS[:2]:
        got = staged.answer(model, document, question, progress=False)
        same(got, generate(model, context, question, config, template=TEMPLATE, progress=False), atol=0)
        assert got.stats["document_cache"] == "recompute" and got.stats["staged"] is True
