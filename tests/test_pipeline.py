"""ParallelComp pipeline on a tiny random model: the invariants that apply to our semantics (docs/ALGORITHM.md),
static shapes, bounded memory and bad input."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_tiny import _our_config, params_from_hf, tiny_hf_model, tiny_tokenizer
from tiny_pipeline import same

import pcomp_jax
from pcomp_jax import Model
from pcomp_jax.cache import KVCache
from pcomp_jax.decoding import Sampling, decode, decode_in_place, generate_ids
from pcomp_jax.model import forward
from pcomp_jax.parallelcomp import pipeline, schedule
from pcomp_jax.parallelcomp.chunking import InputError, chunk_prompt, split_chars
from pcomp_jax.parallelcomp.config import (
    Calibration,
    ParallelCompConfig,
    PipelineConfigError,
    TokenEviction,
    compat,
)
from pcomp_jax.parallelcomp.pipeline import generate
from pcomp_jax.parallelcomp.prompts import PromptTemplate
from pcomp_jax.parallelcomp.scoring import question_nll

WORDS = (
    "alpha beta gamma delta river stone cloud paper garden silver window orange market yellow music "
    "forest candle winter bridge pocket"
).split()
TEMPLATE = PromptTemplate(prefix="Read: ", suffix=" Q: {question} A:")
QUESTION = "what is the key?"


def text(n_words: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, n_words))


@pytest.fixture(scope="module", params=[True, False], ids=["bos", "nobos"])
def model(request) -> Model:
    hf = tiny_hf_model("llama", heads=4, kv_heads=2, layers=2)
    return Model(
        params=params_from_hf(hf),
        config=_our_config(hf),
        tokenizer=tiny_tokenizer(bos=request.param),
        attention_backend="reference",
    )


def cfg(**kw) -> ParallelCompConfig:
    base = dict(chunk_tokens=48, keep_chunks=2, chunk_batch=2, chat=False, sampling=Sampling(max_new_tokens=6))
    return ParallelCompConfig(**{**base, **kw})


def run(model, context, config=None, **kw):
    return generate(model, context, QUESTION, config or cfg(), template=TEMPLATE, progress=False, **kw)


def prompt_of(model, context, config=None):
    config = config or cfg()
    return chunk_prompt(
        model.tokenizer, context, QUESTION, TEMPLATE, chunk_tokens=config.chunk_tokens, split=config.split
    )


# --- chunking (L.1, L.2) ---------------------------------------------------------------------------------------


def test_token_split_count_and_budget(model):
    context = text(35)
    n_tokens = len(model.tokenizer(context, add_special_tokens=False)["input_ids"])
    p = prompt_of(model, context)
    assert p.num_chunks == math.ceil(n_tokens / 48)
    assert all(len(piece) <= 48 for piece in p.pieces) and sum(len(x) for x in p.pieces) == n_tokens
    assert p.chunk_ids(1)[: p.head_len] == p.chunk_ids(0)[: p.head_len]  # same BOS + instruction in every chunk
    assert p.chunk_ids(1)[-len(p.suffix) :] == list(p.suffix)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_char_split_reproduces_text(n):
    s = text(40, seed=n)
    pieces = split_chars(s, n)
    assert "".join(pieces) == s and len(pieces) == n
    assert all(len(p) == len(s) // n for p in pieces[:-1])


def test_char_split_mode_runs(model):
    result = run(model, text(35), cfg(split="chars"))
    assert result.stats["num_chunks"] == len(prompt_of(model, text(35), cfg(split="chars")).pieces)


# --- prefill, scoring and selection (L.5-L.10) -------------------------------------------------------------------


def test_scores_do_not_depend_on_batching_or_padding(model):
    """L.5: a chunk's NLL is the same alone (batch 1) or padded inside a batch of 3 (with an empty slot)."""
    context = text(40)
    alone = run(model, context, cfg(chunk_batch=1)).stats
    batched = run(model, context, cfg(chunk_batch=3)).stats
    np.testing.assert_allclose(alone["chunk_scores"], batched["chunk_scores"], atol=1e-4)
    assert alone["kept_chunks"] == batched["kept_chunks"]


def test_chunk_independence(model):
    """L.6: changing chunk 2's tokens leaves the scores of the other chunks unchanged."""
    p = prompt_of(model, text(40))
    other = tuple(int(t) for t in np.random.default_rng(5).integers(3, 250, len(p.pieces[2])))
    changed = dataclasses.replace(p, pieces=p.pieces[:2] + (other,) + p.pieces[3:])
    a = pipeline.run_parallelcomp(model, [p], cfg(), "reference", False)[0][1]["chunk_scores"]
    b = pipeline.run_parallelcomp(model, [changed], cfg(), "reference", False)[0][1]["chunk_scores"]
    np.testing.assert_allclose(np.delete(a, 2), np.delete(b, 2), atol=1e-6)
    assert abs(a[2] - b[2]) > 1e-4


def test_score_is_mean_question_nll_of_the_chunk_alone(model):
    """L.7: I_c equals the mean NLL of the question tokens from a plain forward of that chunk."""
    context = text(40)
    p = prompt_of(model, context)
    stats = run(model, context).stats
    for i in (0, p.num_chunks - 1):
        ids = p.chunk_ids(i)
        ctx, q = p.context_len(i), len(p.suffix)
        out, _ = forward(
            model.params,
            model.config,
            jnp.asarray([ids]),
            jnp.arange(len(ids))[None],
            logits_at=jnp.arange(ctx - 1, ctx - 1 + q)[None],
        )
        expected = float(question_nll(out.logits[0], jnp.asarray(p.suffix), jnp.ones(q, bool)))
        assert abs(stats["chunk_scores"][i] - expected) < 1e-4


@pytest.mark.parametrize("keep", [1, 2, 3, 10])
def test_kept_chunks_are_the_lowest_scores_in_document_order(model, keep):
    """L.8, L.9: exactly the `keep` lowest scores (all chunks when there are fewer), in increasing order."""
    stats = run(model, text(50), cfg(keep_chunks=keep)).stats
    scores = np.asarray(stats["chunk_scores"])
    expected = sorted(np.argsort(scores, kind="stable")[:keep].tolist())
    assert stats["kept_chunks"] == expected


def test_ties_go_to_the_later_chunk():
    from pcomp_jax.parallelcomp.select import ChunkSet, keep_lowest

    chunks = ChunkSet.empty(4, 1, 2, 1, 2, jnp.float32).replace(
        score=jnp.array([1.0, 0.5, 1.0, 2.0]), index=jnp.arange(4, dtype=jnp.int32)
    )
    assert sorted(np.asarray(keep_lowest(chunks, 2).index).tolist()) == [1, 2]


def test_within_margin_empties_entries_far_from_their_documents_best():
    """Per document (document-major [docs * keep]): entries more than `margin` above the best become empty; the best
    and near-ties stay; empty entries stay empty; None changes nothing."""
    from pcomp_jax.parallelcomp.select import ChunkSet, within_margin

    chunks = ChunkSet.empty(6, 1, 2, 1, 2, jnp.float32).replace(
        score=jnp.array([1.0, 1.05, 1.3, 2.0, 2.2, jnp.inf]), index=jnp.array([4, 7, 1, 0, 3, -1], jnp.int32)
    )
    for margin, want in [(0.1, [4, 7, -1, 0, -1, -1]), (0.0, [4, -1, -1, 0, -1, -1]), (0.3, [4, 7, 1, 0, 3, -1])]:
        got = within_margin(chunks, margin, docs=2)
        assert np.asarray(got.index).tolist() == want, margin
        assert np.isinf(np.asarray(got.score)[np.asarray(want) < 0]).all()
    assert within_margin(chunks, None, docs=2) is chunks


def test_keep_margin_reads_only_the_near_ties(model):
    """keep_margin 0 with keep 3 reads the best chunk alone: the same kept chunk, cache and answer as keep 1; a margin
    above every score gap reads keep 3's chunks with keep 3's answer; one in between keeps exactly the chunks within
    it of the best."""
    context = text(60)
    one, three = run(model, context, cfg(keep_chunks=1)), run(model, context, cfg(keep_chunks=3))
    same(run(model, context, cfg(keep_chunks=3, keep_margin=0.0)), one)
    same(run(model, context, cfg(keep_chunks=3, keep_margin=1e6)), three)
    scores = np.asarray(three.stats["chunk_scores"])
    best3 = np.sort(scores)[:3]
    middle = float(best3[1] - best3[0] + best3[2] - best3[0]) / 2  # between the 2nd's gap and the 3rd's
    assert best3[1] - best3[0] < middle < best3[2] - best3[0]
    stats = run(model, context, cfg(keep_chunks=3, keep_margin=middle)).stats
    assert stats["kept_chunks"] == sorted(np.argsort(scores, kind="stable")[:2].tolist())


def test_bounded_memory_with_many_chunks(model):
    """L.10: chunk caches alive at once never exceed keep_chunks + chunk_batch, whatever the number of chunks."""
    stats = run(model, text(100), cfg(chunk_tokens=32, keep_chunks=2, chunk_batch=3)).stats
    assert stats["num_chunks"] >= 10
    assert stats["peak_chunk_caches"] <= 2 + 3


def test_same_shapes_do_not_recompile(model):
    """Static shapes: contexts of different lengths (and chunk counts) whose groups have the same shapes reuse the
    compiled stages."""
    config = cfg(chunk_tokens=16, chunk_batch=2)
    contexts = [text(n, seed=n) for n in (80, 20, 40, 60)]  # the first has several groups: a fresh buffer and not
    shapes = []
    for context in contexts:
        p = prompt_of(model, context, config)
        full = schedule.round_up(p.context_slots + len(p.suffix), schedule.CHUNK_BUCKET)
        groups = schedule.plan_groups([len(p.chunk_ids(i)) for i in range(p.num_chunks)], full, 2)
        shapes.append({(g.length, len(g.members)) for g in groups})
    assert len({prompt_of(model, c, config).num_chunks for c in contexts}) > 1
    run(model, contexts[0], config)
    stages = (pipeline._group_step, pipeline.second_prefill, decode_in_place)
    sizes = tuple(f._cache_size() for f in stages)
    for context, shape in zip(contexts[1:], shapes[1:], strict=True):
        run(model, context, config)
        if shape <= shapes[0]:  # nothing new to compile
            got = tuple(f._cache_size() for f in stages)
            assert got == sizes, (shape, shapes[0], got, sizes)


def test_decode_is_compiled_before_the_first_wait(model, monkeypatch):
    """Nothing waits for the device before the decode loop is compiled (pipeline.finish_answer): on a fresh process
    the second prefill's and the decode loop's compilations then overlap the chunk groups still computing."""
    config = cfg(sampling=Sampling(max_new_tokens=6, seed=1000 + len(model.tokenizer("a")["input_ids"])))  # unseen
    events = []

    class Compiles(logging.Handler):
        def emit(self, record):
            if "XLA compilation of jit(decode_in_place)" in record.getMessage():
                events.append("compile decode")

    def recording_wait(x, wait=pipeline.jax.block_until_ready):
        events.append("wait")
        return wait(x)

    handler, logger = Compiles(), logging.getLogger("jax")
    logger.addHandler(handler)
    monkeypatch.setattr(pipeline.jax, "block_until_ready", recording_wait)
    try:
        with jax.log_compiles(True):
            run(model, text(60), config)
    finally:
        logger.removeHandler(handler)
    assert events[:2] == ["compile decode", "wait"], events


def test_groups_have_no_empty_rows_and_short_chunks_run_short():
    """Every chunk runs exactly once, groups never exceed chunk_batch and differ by at most one within a length,
    and a chunk runs at the shortest ladder length that holds it."""
    for chunks in range(1, 40):
        for batch in range(1, 9):
            for tail in (1, 100, 500, 7000, 7700):
                lengths = [7701] * (chunks - 1) + [tail]
                groups = schedule.plan_groups(lengths, 7808, batch)
                members = sorted(i for g in groups for i in g.members)
                assert members == list(range(chunks))
                for length in {g.length for g in groups}:
                    sizes = [len(g.members) for g in groups if g.length == length]
                    assert max(sizes) <= batch and max(sizes) - min(sizes) <= 1
                    assert len(sizes) == -(-sum(sizes) // batch)
                for g in groups:
                    ladder = schedule.length_ladder(7808)
                    for i in g.members:
                        assert g.length == min(t for t in ladder if t >= lengths[i])
    assert schedule.balanced_sizes(18, 4) == [4, 4, 4, 3, 3] and schedule.balanced_sizes(5, 4) == [3, 2]
    assert schedule.length_ladder(7808) == [7808, 5888, 3968, 2944, 2048, 1536, 1024, 768, 512, 384, 256, 128]
    for full in (128, 200, 2176, 7808, 131072):  # above a few buckets no chunk pads by more than half its length
        ladder = schedule.length_ladder(full)
        assert all(a <= 1.5 * b for a, b in zip(ladder[:-1], ladder[1:], strict=True) if b >= 4 * schedule.CHUNK_BUCKET)
    groups = schedule.plan_groups([7701] * 17 + [553], 7808, 4)  # 128K tokens at 7680-token chunks
    assert [(g.length, len(g.members)) for g in groups] == [(7808, 4)] * 2 + [(7808, 3)] * 3 + [(768, 1)]


def test_auto_chunk_batch():
    assert schedule.auto_chunk_batch(7808, "cpu") == 4
    assert schedule.auto_chunk_batch(7808, "gpu") == 4 and schedule.auto_chunk_batch(2176, "gpu") == 15
    assert schedule.auto_chunk_batch(128, "gpu") == 16
    assert schedule.auto_chunk_batch(2176, "gpu", per_chunk_bytes=10, free_bytes=35) == 3  # memory caps it
    assert schedule.auto_chunk_batch(2176, "gpu", per_chunk_bytes=10, free_bytes=-5) == 1


def test_short_last_chunk_runs_short_with_the_same_results(model):
    """A short last chunk runs at a shorter padded length, with the same scores, kept chunks and answer as when the
    ladder is cut to the full length alone (every chunk padded to it)."""
    config = cfg(chunk_tokens=120, keep_chunks=2, chunk_batch=2)

    def short_tail(n):
        p = prompt_of(model, text(n, seed=3), config)
        full = schedule.round_up(p.context_slots + len(p.suffix), schedule.CHUNK_BUCKET)
        return p.num_chunks >= 3 and len(p.chunk_ids(p.num_chunks - 1)) <= schedule.length_ladder(full)[1]

    context = text(next(n for n in range(60, 400) if short_tail(n)), seed=3)
    short_result = run(model, context, config)
    original = schedule.length_ladder
    try:
        schedule.length_ladder = lambda full: [full]
        padded_result = run(model, context, config)
    finally:
        schedule.length_ladder = original
    assert short_result.tokens == padded_result.tokens
    short, padded = short_result.stats, padded_result.stats
    assert short["prefill_rows"] < padded["prefill_rows"]
    assert short["kept_chunks"] == padded["kept_chunks"]
    np.testing.assert_allclose(short["chunk_scores"], padded["chunk_scores"], atol=1e-4)


# --- merge, positions and equivalences (L.11-L.14) ---------------------------------------------------------------


@pytest.mark.parametrize("shared_head", [False, True], ids=["heads", "one-head"])
def test_merged_cache_size_and_question_position(model, shared_head):
    """L.11, L.12: valid cache = kept contexts with one BOS (with `shared_head`, one BOS + prefix), plus the
    question; the question starts after the longest kept context."""
    context = text(50)
    p = prompt_of(model, context)
    stats = run(model, context, cfg(shared_head=shared_head)).stats
    kept = stats["kept_chunks"]
    once = p.head_len if shared_head else len(p.bos)
    expected = sum(p.context_len(i) for i in kept) - (len(kept) - 1) * once + len(p.suffix)
    assert stats["cache_tokens_per_layer"] == [expected] * model.config.num_layers
    assert stats["question_position"] == max(p.context_len(i) for i in kept)


def test_one_chunk_equals_vanilla_greedy(model):
    """L.13: a context shorter than one chunk gives exactly the tokens of plain greedy decoding of the prompt."""
    context = text(8)
    p = prompt_of(model, context)
    assert p.num_chunks == 1
    config = cfg()
    ours = run(model, context, config)
    vanilla = generate_ids(model.params, model.config, p.whole_ids(), config.sampling, "reference")
    assert ours.tokens == vanilla
    assert run(model, context, config, method="full").tokens == vanilla


SUMMARY = PromptTemplate(prefix="Read: ", suffix=" Summary:")  # no {question}


def test_question_free_prompt_that_fits_is_read_whole(model):
    """`whole_when_fits`: a prompt with no question over a document that fits the window is method full (same
    tokens); one that does not fit, a prompt with a question, or whole_when_fits=False run ParallelComp; a batch
    decides per document, each answer equal to its separate call."""
    short, long = text(40), text(100)
    window = model.config.trained_context - cfg().sampling.max_new_tokens
    summary = lambda ctx, config=None, **kw: generate(
        model, ctx, "", config or cfg(), template=SUMMARY, progress=False, **kw
    )
    of = lambda ctx: chunk_prompt(model.tokenizer, ctx, "", SUMMARY, chunk_tokens=cfg().chunk_tokens)
    assert of(short).num_chunks > 2 and len(of(short).whole_ids()) <= window < len(of(long).whole_ids())
    whole = summary(short)
    assert whole.stats["method"] == "full" and whole.stats["read_whole"] is True
    assert whole.tokens == summary(short, method="full").tokens
    chunked = summary(short, cfg(whole_when_fits=False))
    assert chunked.stats["method"] == "parallelcomp" and "read_whole" not in chunked.stats
    assert len(chunked.stats["kept_chunks"]) == 2 < chunked.stats["num_chunks"]
    assert summary(long).stats["method"] == "parallelcomp" and summary(long).stats["read_whole"] is False
    assert run(model, short).stats["method"] == "parallelcomp"  # a question: ParallelComp
    both = generate(model, [long, short], "", cfg(), template=SUMMARY, progress=False)
    assert [r.stats["read_whole"] for r in both] == [False, True]
    assert [r.tokens for r in both] == [summary(long).tokens, whole.tokens]
    assert not compat().whole_when_fits


def test_empty_context_is_plain_generation(model):
    result = run(model, "")
    p = prompt_of(model, "")
    assert result.stats["num_chunks"] == 1
    assert result.tokens == generate_ids(model.params, model.config, p.whole_ids([]), cfg().sampling, "reference")


@pytest.mark.parametrize("shared_head", [False, True], ids=["heads", "one-head"])
def test_second_prefill_equals_dense_union_reference(model, shared_head):
    """L.14: with every chunk kept, the answer equals a dense reference where the question attends to the union of
    the chunks' keys (each with its chunk-local RoPE) and causally to itself, built from separate forwards. The
    union has one BOS; with `shared_head`, one BOS + instruction prefix (the first chunk's)."""
    context = text(40)
    config = cfg(keep_chunks=10, shared_head=shared_head)
    p = prompt_of(model, context, config)
    assert p.num_chunks > 2 and len(p.prefix) > 0
    ks, vs = [], []
    for i in range(p.num_chunks):
        ids = p.chunk_ids(i)[: p.context_len(i)]
        _, cache = forward(model.params, model.config, jnp.asarray([ids]), jnp.arange(len(ids))[None])
        start = 0 if i == 0 else p.head_len if shared_head else len(p.bos)
        k, v, _ = cache.stacked()
        ks.append(k[:, :, start:]), vs.append(v[:, :, start:])
    k, v = jnp.concatenate(ks, axis=2), jnp.concatenate(vs, axis=2)
    s, q = k.shape[2], len(p.suffix)
    n = config.sampling.max_new_tokens
    pad = [(0, 0), (0, 0), (0, q + n), (0, 0), (0, 0)]
    union = KVCache.from_stacked(jnp.pad(k, pad), jnp.pad(v, pad), jnp.pad(jnp.ones(k.shape[:-1], bool), pad[:-1]), s)
    start = max(p.context_len(i) for i in range(p.num_chunks))
    out, union = forward(
        model.params,
        model.config,
        jnp.asarray([p.suffix]),
        (start + jnp.arange(q))[None],
        union,
        logits_at=jnp.asarray([[q - 1]]),
    )
    ref, count = decode(
        model.params,
        model.config,
        union,
        out.logits[:, 0],
        jnp.asarray([start + q]),
        sampling=config.sampling,
        eos_ids=tuple(model.config.eos_token_ids),
    )
    assert run(model, context, config).tokens == np.asarray(ref[0, : int(count[0])]).tolist()


def test_shared_head_with_consecutive_positions(model):
    """The kept chunks' texts follow one head: the question starts after their contexts less the repeated heads."""
    context = text(50)
    p = prompt_of(model, context)
    stats = run(model, context, cfg(shared_head=True, positions="consecutive")).stats
    kept = stats["kept_chunks"]
    assert len(kept) == 2 and len(p.prefix) > 0
    assert stats["question_position"] == sum(p.context_len(i) for i in kept) - (len(kept) - 1) * p.head_len


def test_shared_head_refuses_a_batch_whose_heads_differ(model):
    asked_first = PromptTemplate(prefix="Q: {question} Read: ", suffix=" A:")
    with pytest.raises(InputError, match="shared_head needs the same head"):
        generate(
            model,
            [text(50), text(50, 1)],
            ["what?", "what is the key here?"],
            cfg(shared_head=True),
            template=asked_first,
            progress=False,
        )


# --- token eviction (L.15-L.18) ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shared_head", [False, True], ids=["heads", "one-head"])
def test_eviction_keeps_exactly_capacity_per_layer_and_head(model, shared_head):
    context = text(50)
    p = prompt_of(model, context)
    ev = TokenEviction(capacity=10, window=4)
    stats = run(model, context, cfg(eviction=ev, shared_head=shared_head)).stats
    kept = stats["kept_chunks"]
    once = p.head_len if shared_head else len(p.bos)
    # every kept chunk: its BOS (with shared_head: BOS + prefix, never evicted) + exactly `capacity` context tokens;
    # one of those in the merge; then the question
    expected = len(kept) * (once + 10) - (len(kept) - 1) * once + len(p.suffix)
    assert stats["cache_tokens_per_layer"] == [expected] * model.config.num_layers
    no_ev = run(model, context).stats
    assert stats["question_position"] == no_ev["question_position"]  # L.18
    assert stats["chunk_scores"] == no_ev["chunk_scores"]  # L.22 of the paper-vs-code notes: scores use all keys


def test_evict_tokens_direct():
    """L.15, L.17: indices in the candidate set, BOS kept, counts exact per (layer, KV head), also per query head."""
    from pcomp_jax.attention import observation_scores
    from pcomp_jax.parallelcomp.eviction import evict_tokens

    rng = np.random.default_rng(0)
    layers, t, kh, n, h = 2, 40, 2, 4, 8
    k = jnp.asarray(rng.normal(size=(layers, t, kh, h)), jnp.float32)
    k = k.at[:, :, :, 0].set(jnp.arange(t, dtype=jnp.float32)[None, :, None])  # slot id in a channel
    valid = jnp.ones((layers, t, kh), bool)
    queries = jnp.asarray(rng.normal(size=(layers, 4, n, h)), jnp.float32)
    scores = observation_scores(queries, k, valid, jnp.arange(36, 40))  # [L, N, T] (layers as the batch axis)
    for per_head in (False, True):
        ev = TokenEviction(capacity=7, window=4, per_query_head=per_head)
        ks, _, vs = evict_tokens(k, k, valid, scores, jnp.int32(30), bos_len=1, context_slots=32, eviction=ev)
        heads = n if per_head else kh
        assert ks.shape == (layers, 8, heads, h) and bool(vs.all())
        slots = np.asarray(ks[..., 0])  # [L, 8, heads]
        assert (slots[:, 0] == 0).all()  # BOS
        assert ((slots[:, 1:] >= 1) & (slots[:, 1:] < 30)).all()  # candidates: context tokens after the BOS
        assert (np.diff(slots[:, 1:], axis=1) > 0).all()  # original order, no repeats


def test_large_capacity_is_identity(model):
    """L.16: capacity >= chunk length keeps everything: same answer as no eviction."""
    context = text(40)
    big = run(model, context, cfg(eviction=TokenEviction(capacity=10_000, window=4)))
    assert big.tokens == run(model, context).tokens


def test_max_pool_is_monotone_and_respects_candidates():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from pcomp_jax.parallelcomp.scoring import max_pool

    # float32 values without subnormals: XLA:CPU flushes subnormals to zero inside reduce_window (seen in CI with
    # 1.4e-45), and attention scores are never that small
    finite32 = st.floats(0, 1, width=32, allow_subnormal=False)

    @settings(max_examples=30, deadline=None)
    @given(st.lists(finite32, min_size=3, max_size=40), st.integers(0, 5), st.sampled_from([1, 3, 7]))
    def check(values, lo, kernel):
        s = jnp.asarray(values, jnp.float32)
        cand = jnp.arange(len(values)) >= min(lo, len(values) - 1)
        pooled = np.asarray(max_pool(s, cand, kernel))
        c = np.asarray(cand)
        assert (pooled[c] >= np.asarray(s)[c]).all() and np.isneginf(pooled[~c]).all()
        for j in np.flatnonzero(c):  # pooled = max over the window within the candidates
            window = [values[i] for i in range(max(0, j - kernel // 2), min(len(values), j + kernel // 2 + 1)) if c[i]]
            assert pooled[j] == pytest.approx(max(window))

    check()


# --- calibration (L.20-L.22) -------------------------------------------------------------------------------------


def test_calibration_threshold_one_is_identity(model):
    context = text(40)
    calib = Calibration(region="all", layers=(0, 1), threshold=1.0)
    assert run(model, context, cfg(calibration=calib)).tokens == run(model, context).tokens


def test_calibration_removes_equal_counts_only_in_range_and_region():
    from pcomp_jax.parallelcomp.calibration import attention_profile, calibrate, calibration_filter, region_mask

    rng = np.random.default_rng(1)
    b, t, n, kh, h, s = 1, 3, 4, 2, 8, 60
    q = jnp.asarray(rng.normal(size=(b, t, n, h)) * 3, jnp.float32)
    k = jnp.asarray(rng.normal(size=(b, s, kh, h)) * 3, jnp.float32)
    valid = jnp.asarray(rng.random((b, s, kh)) > 0.1).at[:, 57:].set(True)
    q_valid, q_slots = jnp.ones((b, t), bool), jnp.arange(57, 60)
    calib = Calibration(region="sink", layers=(1, 2), threshold=0.02, region_width=20)
    filt = calibration_filter(calib)
    assert bool((filt(0, q, q_valid, q_slots, k, valid) == valid).all())  # outside lo..hi: untouched
    new = filt(1, q, q_valid, q_slots, k, valid)
    removed = np.asarray(valid & ~new).transpose(0, 2, 1)  # [B, K, S]
    assert bool((new <= valid).all())  # only removes
    counts = removed.sum(-1)
    assert (counts == counts.max()).all() and counts.max() > 0  # the same M for every head
    profile = np.asarray(attention_profile(q, q_valid, q_slots, k, valid, 1))
    valid_t = np.asarray(valid).transpose(0, 2, 1)
    outlier = valid_t & np.asarray(region_mask(jnp.asarray(valid_t), "sink", 20)) & (profile > 0.02)
    assert (removed >= outlier).all()  # every outlier removed; padding removals are the lowest-profile keys
    for head in range(kh):
        extra = removed[0, head] & ~outlier[0, head]
        if extra.any():
            kept = valid_t[0, head] & ~removed[0, head]
            assert profile[0, head][extra].max() <= profile[0, head][kept].min() + 1e-7
    assert not removed[..., 57:].any()  # sink region: the question's own keys stay (L.22)
    np.testing.assert_array_equal(
        np.asarray(calibrate(jnp.asarray(profile), jnp.asarray(valid_t), dataclasses.replace(calib, threshold=1.0))),
        valid_t,
    )


def test_calibration_runs_in_pipeline_and_shrinks_cache(model):
    calib = Calibration(region="all", layers=(1, 1), threshold=0.05, region_width=10)
    stats = run(model, text(40), cfg(calibration=calib)).stats
    base = run(model, text(40)).stats
    assert stats["cache_tokens_per_layer"][0] == base["cache_tokens_per_layer"][0]
    assert stats["cache_tokens_per_layer"][1] <= base["cache_tokens_per_layer"][1]


# --- decoding, methods (L.23, L.24) ------------------------------------------------------------------------------


def test_decoding_bounds_and_eos(model):
    result = run(model, text(30))
    assert 1 <= len(result.tokens) <= 6
    eos = model.config.eos_token_ids
    assert all(t not in eos for t in result.tokens[:-1])
    assert QUESTION not in result.text


def test_truncate_keeps_first_and_last_halves(model):
    context = text(100)
    ids = model.tokenizer(context, add_special_tokens=False)["input_ids"]
    p = prompt_of(model, context)
    result = run(model, context, method="truncate")
    budget = model.config.trained_context - 6 - p.head_len - len(p.suffix)
    assert len(ids) > budget and result.stats["kept_context_tokens"] == budget
    assert result.stats["prompt_tokens"] == p.head_len + budget + len(p.suffix)


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"question": ""}, InputError, "question is empty"),
        ({"question": "why " * 80}, InputError, "longer than the chunk budget"),
        (
            {"config": cfg(chunk_tokens=500), "context": text(100)},
            InputError,
            "does not fit the model's 512-token training window",
        ),
        ({"method": "magic"}, InputError, "unknown method"),
    ],
)
def test_bad_input_messages(model, kwargs, error, message):
    args = {"context": text(40), "question": QUESTION, "config": cfg(), "template": TEMPLATE, "progress": False}
    with pytest.raises(error, match=message):
        generate(model, **{**args, **kwargs})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"keep_chunks": 0}, "keep_chunks must be >= 1"),
        ({"chunk_tokens": 0}, "chunk_tokens must be >= 1"),
        ({"split": "words"}, "unknown split"),
        ({"keep_margin": -0.5}, "keep_margin must be >= 0, got -0.5"),
        ({"keep_margin": float("nan")}, "keep_margin must be a finite number, got nan"),
        ({"keep_margin": "0.1"}, "keep_margin must be a finite number, got '0.1'"),
    ],
)
def test_bad_config_messages(change, message):
    with pytest.raises(PipelineConfigError, match=message):
        cfg(**change)


def test_named_choices_are_their_strings():
    """Enum members and plain strings are interchangeable: configs normalise strings to members, which compare and
    hash like the strings (jit caches agree) and write plain strings to JSON; a wrong value is one clear line."""
    from pcomp_jax.choices import Positions, Region, Split

    c = ParallelCompConfig(split="chars", positions="shared", calibration=Calibration(region="middle"))
    assert c.split is Split.CHARS and c.positions is Positions.SHARED and c.calibration.region is Region.MIDDLE
    assert c == ParallelCompConfig(split=Split.CHARS, calibration=Calibration(region=Region.MIDDLE))
    assert hash(c) == hash(ParallelCompConfig(split=Split.CHARS, calibration=Calibration(region=Region.MIDDLE)))
    assert json.dumps({"region": c.calibration.region}) == '{"region": "middle"}'
    with pytest.raises(PipelineConfigError, match=r"^unknown split 'words' \(choose from tokens, chars\)$"):
        ParallelCompConfig(split="words")


def test_bad_sub_config_messages():
    with pytest.raises(PipelineConfigError, match="unknown calibration region"):
        Calibration(region="edges")
    with pytest.raises(PipelineConfigError, match="pool_kernel"):
        TokenEviction(pool_kernel=4)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ParallelCompConfig(chunk_tokens=256.5), "chunk_tokens must be an integer, got 256.5"),
        (lambda: ParallelCompConfig(chunk_tokens="512"), "chunk_tokens must be an integer, got '512'"),
        (lambda: ParallelCompConfig(keep_chunks=True), "keep_chunks must be an integer, got True"),
        (lambda: ParallelCompConfig(eviction=256), "eviction must be a TokenEviction or None, got 256"),
        (lambda: ParallelCompConfig(calibration="sink"), "calibration must be a Calibration or None, got 'sink'"),
        (lambda: Calibration(layers=5), r"calibration layers must be a pair of integers \(lo, hi\), got 5"),
        (lambda: Calibration(layers=(0, 1.5)), r"calibration layers must be a pair of integers .*got \(0, 1.5\)"),
        (lambda: Calibration(threshold=math.nan), "calibration threshold must be a finite number"),
        (lambda: TokenEviction(capacity=True), "eviction capacity must be an integer, got True"),
    ],
    ids=["float", "str", "bool", "eviction", "calibration", "layers-int", "layers-float", "nan", "capacity-bool"],
)
def test_config_fields_of_the_wrong_type_are_named(make, message):
    with pytest.raises(PipelineConfigError, match=message):
        make()


def test_calibration_layers_list_becomes_a_hashable_tuple():
    calib = Calibration(layers=[0, 3])
    assert calib.layers == (0, 3) and isinstance(calib.layers, tuple)
    assert calib == Calibration(layers=(0, 3)) and hash(ParallelCompConfig(calibration=calib))  # jit-static


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_sampling_temperature_must_be_finite(value):
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        Sampling(temperature=value)
    with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\]"):
        Sampling(top_p=value)


def test_calibration_layers_past_the_last_layer(model):
    config = cfg(calibration=Calibration(layers=(0, 9)))
    with pytest.raises(InputError, match=r"calibration layers 0-9 go past the model's last layer \(1; layers are"):
        run(model, text(40), config)
    with pytest.raises(InputError, match="past the model's last layer"):
        generate(model, text(40), QUESTION, config=ParallelCompConfig(calibration=Calibration(layers=(0, 2))))


def test_empty_context_is_flagged(model):
    assert run(model, "").stats["empty_context"] is True
    assert run(model, text(8)).stats["empty_context"] is False
    for method in ("full", "truncate"):
        assert run(model, "", method=method).stats["empty_context"] is True


def test_keep_chunks_beyond_the_document_allocates_only_its_chunks(model):
    stats = run(model, text(25), cfg(keep_chunks=99, chunk_batch=2)).stats
    n = stats["num_chunks"]
    assert 2 <= n <= 4
    assert stats["kept_chunks"] == list(range(n))
    assert stats["peak_chunk_caches"] <= n + 2


def test_per_query_head_eviction_end_to_end(model):
    """The official per-head selection: the cache stores KV heads repeated per query head, the question and decoding
    run over it, and a capacity that keeps everything gives the same answer as no eviction."""
    context = text(40)
    ev = TokenEviction(capacity=10, window=4, per_query_head=True)
    stats = run(model, context, cfg(eviction=ev)).stats
    assert stats["kept_chunks"] == run(model, context).stats["kept_chunks"]
    big = TokenEviction(capacity=10_000, window=4, per_query_head=True)
    assert run(model, context, cfg(eviction=big)).tokens == run(model, context).tokens


@pytest.mark.parametrize("per_query_head", [False, True], ids=["kv-heads", "q-heads"])
def test_pallas_backend_makes_the_same_choices(model, per_query_head):
    """The pipeline with the Pallas kernel (interpret mode on CPU) keeps the same chunks, the same tokens in each
    layer and head, and gives the same answer as the reference backend."""
    pallas = dataclasses.replace(model, attention_backend="pallas")
    ev = TokenEviction(capacity=10, window=4, per_query_head=per_query_head)
    context = text(60)
    ref, got = run(model, context, cfg(eviction=ev)), run(pallas, context, cfg(eviction=ev))
    assert got.stats["kept_chunks"] == ref.stats["kept_chunks"]
    np.testing.assert_allclose(got.stats["chunk_scores"], ref.stats["chunk_scores"], rtol=1e-4)
    assert got.tokens == ref.tokens

    # the kept tokens themselves: scores from both backends, then the same selection per (layer, head)
    from pcomp_jax.parallelcomp.eviction import evict_tokens

    p = prompt_of(model, context)
    ids = jnp.asarray([p.bos + p.prefix + p.pieces[0] + p.suffix])
    t = ids.shape[1]
    rows = jnp.arange(t - 4, t)[None]
    selections = []
    for backend in ("reference", "pallas"):
        out, cache = forward(
            model.params, model.config, ids, jnp.arange(t)[None], score_rows=rows, attention_backend=backend
        )
        k, v, valid = (x[:, 0] for x in cache.stacked())
        kept = evict_tokens(
            jnp.arange(t, dtype=jnp.float32)[None, :, None, None] + 0 * k,  # slot ids as "keys"
            v,
            valid,
            out.scores[:, 0],
            jnp.int32(t - len(p.suffix)),
            bos_len=len(p.bos),
            context_slots=t - len(p.suffix),
            eviction=dataclasses.replace(ev, capacity=8),
        )
        selections.append((np.asarray(out.scores), np.asarray(kept[0])))
    np.testing.assert_allclose(selections[1][0], selections[0][0], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(selections[1][1], selections[0][1])


def test_streaming_keeps_sinks_and_recent_window(model):
    context = text(100)
    p = prompt_of(model, context)
    stats = run(model, context, method="streaming").stats
    budget = model.config.trained_context - 6
    assert len(p.whole_ids()) > budget and stats["prompt_tokens"] == budget


def test_compat_preset_is_the_official_readme_setup(model):
    from pcomp_jax.parallelcomp.config import compat

    c = compat(8192)
    assert (c.chunk_tokens, c.keep_chunks, c.split, c.chat, c.eviction, c.calibration) == (
        7600,
        3,
        "chars",
        False,
        None,
        None,
    )
    assert c.sampling.min_new_tokens == 1 and c.sampling.temperature == 0
    assert compat(4096).chunk_tokens == 3600
    small = c.replace(chunk_tokens=48, sampling=Sampling(max_new_tokens=6, min_new_tokens=1))
    assert run(model, text(40), small).stats["num_chunks"] >= 2  # the character split runs end to end


def test_generate_from_ids_is_generate_without_a_template(model):
    """The token-level entry point gives what `generate` gives for the same tokens with an empty instruction and
    the question as the whole suffix; it also runs without a tokenizer (random-weight benchmarks)."""
    tok = model.tokenizer
    adds_bos = tok("a")["input_ids"][:1] == [tok.bos_token_id]
    ids_model = dataclasses.replace(
        model, config=dataclasses.replace(model.config, bos_token_id=tok.bos_token_id if adds_bos else None)
    )
    context = text(150)
    bare = PromptTemplate(prefix="", suffix="{question}")
    want = generate(model, context, QUESTION, cfg(), template=bare, progress=False)
    ids = tok(context, add_special_tokens=False)["input_ids"]
    question = tok(QUESTION, add_special_tokens=False)["input_ids"]
    got = pcomp_jax.generate_from_ids(ids_model, ids, question, cfg(), progress=False)
    assert got.tokens == want.tokens
    for key in ("kept_chunks", "chunk_scores", "chunk_tokens", "question_position"):
        assert got.stats[key] == want.stats[key], key
    for stats in (got.stats, want.stats):
        assert stats["host_seconds"] >= 0 and stats["first_token_seconds"] >= stats["prefill_seconds"]
    silent = pcomp_jax.generate_from_ids(dataclasses.replace(ids_model, tokenizer=None), ids, question, cfg())
    assert silent.tokens == want.tokens and silent.text == ""
    with pytest.raises(InputError, match="question is empty"):
        pcomp_jax.generate_from_ids(ids_model, ids, [], cfg())


def test_stats_keys_are_declared(model):
    """Every key an answer's stats carry is one `Stats` declares (ParallelComp, a batch, the baselines, staged)."""
    from pcomp_jax import generate_many
    from pcomp_jax.parallelcomp.stats import Stats

    declared = set(Stats.__annotations__)
    results = [run(model, text(60)), *run(model, [text(60), text(30)]), run(model, "")]
    results += [run(model, text(60), method=m) for m in ("truncate", "streaming", "full")]
    results += generate_many(model, text(60), [QUESTION], cfg(), template=TEMPLATE, progress=False)
    for r in results:
        assert set(r.stats) <= declared, set(r.stats) - declared
