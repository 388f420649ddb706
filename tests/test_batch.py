"""Batches of documents: `generate` over lists answers each document as a separate call would (the same answers, kept
chunks, cache and positions; chunk scores to float rounding), with documents of different lengths (one shorter
than `keep_chunks` chunks) and questions of different lengths, with and without eviction and calibration; through
the token-level entry point and the baselines; bad batches are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_pipeline import TEMPLATE, cfg, same, text, tiny_model

from pcomp_jax import Model
from pcomp_jax.parallelcomp.chunking import InputError
from pcomp_jax.parallelcomp.config import Calibration, TokenEviction
from pcomp_jax.parallelcomp.pipeline import generate, generate_from_ids

DOCUMENTS = [text(130, seed=1), text(6, seed=3), text(260, seed=4)]  # several chunks, one chunk, many chunks
QUESTIONS = ["what is the key?", "why?", "which river and which stone?"]


@pytest.fixture(scope="module", params=[True, False], ids=["bos", "nobos"])
def model(request) -> Model:
    return tiny_model(bos=request.param)


@pytest.mark.parametrize(
    "config",
    [
        cfg(chunk_batch=3),
        cfg(keep_chunks=1, split="chars"),
        cfg(eviction=TokenEviction(capacity=12, window=4)),
        cfg(calibration=Calibration(region="sink", layers=(0, 1), threshold=0.01, region_width=4)),
        cfg(keep_chunks=3, keep_margin=0.1),  # one document reads 1 chunk, another 2
        cfg(shared_head=True, eviction=TokenEviction(capacity=12, window=4)),
    ],
    ids=["plain", "keep1-chars", "evict", "calibration", "margin", "shared-head-evict"],
)
def test_batch_equals_separate_calls(model, config):
    batch = generate(model, DOCUMENTS, QUESTIONS, config, template=TEMPLATE, progress=False)
    assert isinstance(batch, list) and len(batch) == len(DOCUMENTS)
    for context, question, got in zip(DOCUMENTS, QUESTIONS, batch, strict=True):
        want = generate(model, context, question, config, template=TEMPLATE, progress=False)
        same(got, want)
        assert got.stats["batch"] == 3 and "batch" not in want.stats
    assert batch[1].stats["num_chunks"] < config.keep_chunks or config.keep_chunks == 1  # a short row has room left
    assert len({r.stats["prefill_groups"] for r in batch}) == 1  # one schedule for the batch


def test_token_level_batch_and_one_question_for_all(model):
    config = cfg(chunk_batch=4)
    rng = np.random.default_rng(0)
    contexts = [rng.integers(5, model.config.vocab_size, n).tolist() for n in (150, 40, 90)]
    questions = [[7, 8, 9], rng.integers(5, 60, 20).tolist(), [11]]
    for got, c, q in zip(generate_from_ids(model, contexts, questions, config), contexts, questions, strict=True):
        same(got, generate_from_ids(model, c, q, config, progress=False))
    shared = generate(model, DOCUMENTS[:2], QUESTIONS[0], config, template=TEMPLATE, progress=False)
    for context, got in zip(DOCUMENTS[:2], shared, strict=True):
        same(got, generate(model, context, QUESTIONS[0], config, template=TEMPLATE, progress=False))


def test_baselines_over_a_batch(model):
    config = cfg()
    batch = generate(model, DOCUMENTS[:2], QUESTIONS[:2], config, method="truncate", template=TEMPLATE)
    for context, question, got in zip(DOCUMENTS[:2], QUESTIONS[:2], batch, strict=True):
        want = generate(model, context, question, config, method="truncate", template=TEMPLATE)
        assert got.tokens == want.tokens and got.stats["method"] == "truncate"


@pytest.mark.parametrize(
    "context, question, message",
    [
        ("one document", ["q1", "q2"], "generate_many"),
        (["a", "b"], ["q1"], "2 contexts but 1 questions"),
        ([], "q", "non-empty list"),
        (["a", 3], "q", "non-empty list"),
        (["a", "b"], ["q", None], "one per context"),
    ],
)
def test_bad_batches_are_one_line_errors(model, context, question, message):
    with pytest.raises(InputError, match=message):
        generate(model, context, question, cfg(), template=TEMPLATE)
