"""Prefill a document once, then answer many questions about it.

`generate` bakes the question into every chunk's prefill, so each question pays for the whole document. By
causality a chunk's context rows never see the question, so the work splits in two stages with the same numbers:

1. `prefill_document`: every chunk `[BOS] + prefix + piece` prefilled once (the same parallel groups as
   `generate`), keeping per chunk its KV cache and the logits of its last context token.
2. `answer`, per question: the question part alone, run over every chunk's cache (a few rows per chunk, at the
   positions and slots that follow that chunk's context), gives the same question NLL as the single pass (the last
   context token's stored logits predict its first token) and, for token eviction, the same observation scores
   (the observed rows are question rows, by default the question's last 8 tokens). Then selection, eviction, merge,
   the question's prefill over the merged cache and decoding, exactly as in `generate` (`pipeline.finish_answer`).

Kept chunks and answers equal `generate`'s (tests); chunk scores agree to float rounding (the attention runs over a
cache instead of one causal pass). The staged path always chunks: a prompt with no question over a document that
fits the window, which `generate` reads whole, compares with `whole_when_fits=False`. Templates that put the
question before the document cannot be staged (`document_prompt` says so): ask them through `generate`.

Where the chunk caches live (`Document.placement`), chosen from their size before anything is prefilled: on the
accelerator while they fit beside the weights and one question's working set; else in host memory (copied back a
group at a time per question) while they take at most half of the host's free memory; else nowhere ("recompute"):
each question then re-runs the single pass of `generate` (the same answers, at `generate`'s cost and bounded
memory). On a CPU the device memory is the host's. The single-question `generate` keeps its bounded, flat memory.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from pcomp_jax.attention import last_rows, resolve_backend
from pcomp_jax.cache import KVCache
from pcomp_jax.model import forward, param_dtype
from pcomp_jax.parallelcomp.chunking import (
    ChunkedPrompt,
    InputError,
    document_prompt,
    prompt_from_ids,
    round_up,
    with_question,
)
from pcomp_jax.parallelcomp.config import ParallelCompConfig
from pcomp_jax.parallelcomp.eviction import evict_tokens, keep_context
from pcomp_jax.parallelcomp.pipeline import (
    QUESTION_BUCKET,
    Plan,
    Result,
    answer_text,
    check_config,
    check_fits,
    default_chunk_batch,
    finish_answer,
    make_plan,
    pad_ids,
    pad_slots,
    run_parallelcomp,
)
from pcomp_jax.parallelcomp.prompts import PromptTemplate, get_template
from pcomp_jax.parallelcomp.schedule import CHUNK_BUCKET, plan_groups
from pcomp_jax.parallelcomp.scoring import question_nll
from pcomp_jax.parallelcomp.select import ChunkSet, concat, keep_lowest


@dataclasses.dataclass(frozen=True)
class ChunkGroup:
    """Prefilled chunks (document indices `members`): caches k, v [C, L, S, K, H] and valid [C, L, S, K] over
    S = context_slots, the logits of each chunk's last context token [C, V] float32, context lengths [C]."""

    members: tuple[int, ...]
    k: Any
    v: Any
    valid: Any
    last_logits: Any
    context_len: Any


@dataclasses.dataclass(frozen=True)
class Document:
    """A document prefilled once (`prefill_document`); `answer` asks it questions. `prompt` has no question."""

    prompt: ChunkedPrompt
    config: ParallelCompConfig
    template: PromptTemplate | None  # None for a token-level document (`prefill_document_ids`)
    chat: bool
    groups: tuple[ChunkGroup, ...]
    placement: str  # "device", "host" or "recompute" (no caches kept: each question re-runs the single pass)
    stats: dict


@functools.partial(jax.jit, static_argnames=("config", "slots", "backend"))
def _prefill_group(params, tokens, context_len, *, config, slots: int, backend: str):
    """Prefill chunks [C, T] of context only: caches cut or padded to `slots`, last-token logits [C, V]."""
    t = tokens.shape[1]

    def one(tok, ctx):
        pos = jnp.arange(t)
        out, cache = forward(
            params,
            config,
            tok[None],
            pos[None],
            token_valid=(pos < ctx)[None],
            logits_at=jnp.reshape(ctx - 1, (1, 1)),
            attention_backend=backend,
        )
        k, v, valid = (x[:, 0] for x in cache.stacked())  # [L, T, K, H], [L, T, K]
        if t < slots:
            k, v, valid = pad_slots(k, v, valid, slots - t)
        return k[:, :slots], v[:, :slots], valid[:, :slots], out.logits[0, 0]

    return jax.vmap(one)(tokens, context_len)


@functools.partial(jax.jit, static_argnames=("config", "plan"))
def _question_group(
    params,
    buffer: ChunkSet,
    k,
    v,
    valid,
    last_logits,
    context_len,
    index,
    q_tokens,
    q_len,
    targets,
    target_valid,
    observe_end,
    *,
    config,
    plan: Plan,
):
    """The question over a group's chunk caches: score, compress, and keep the best in the buffer (as
    pipeline._group_step does for a single pass). observe_end: the end of the observed rows among the question's."""
    slots = k.shape[2]
    qp = q_tokens.shape[0]

    def one(k, v, valid, last, ctx):
        cache = KVCache.from_stacked(k[:, None], v[:, None], valid[:, None], end=slots).grow(qp)
        score_rows = None
        if plan.eviction is not None:
            score_rows = last_rows(observe_end[None], plan.eviction.window)
        out, _ = forward(
            params,
            config,
            q_tokens[None],
            (ctx + jnp.arange(qp))[None],  # RoPE positions follow this chunk's context; slots follow the cache
            cache,
            token_valid=(jnp.arange(qp) < q_len)[None],
            logits_at=jnp.arange(qp)[None],
            score_rows=score_rows,
            attention_backend=plan.backend,
        )
        logits = jnp.concatenate([last[None], out.logits[0, : qp - 1]])  # the logits predicting each question token
        nll = question_nll(logits, targets, target_valid)
        if plan.eviction is None:
            k, v, valid = keep_context(k, v, valid, ctx, context_slots=slots)
        else:
            # the observed rows' scores in the single pass's slot order, the question's keys right after the
            # context (pooling near the context's end sees them there), for slots [0, S + Qp)
            slot = jnp.arange(slots + qp)
            src = jnp.where(slot < ctx, slot, slots + slot - ctx)
            scores = jnp.where(slot < ctx + qp, jnp.take(out.scores[:, 0], src, axis=-1, mode="clip"), 0.0)
            k, v, valid = pad_slots(k, v, valid, qp)  # [L, S + Qp, K, H]
            k, v, valid = evict_tokens(
                k, v, valid, scores, ctx, bos_len=plan.read_once, context_slots=slots, eviction=plan.eviction
            )
        return k, v, valid, nll

    k, v, valid, nll = jax.vmap(one)(k, v, valid, last_logits, context_len)
    group = ChunkSet(k=k, v=v, valid=valid, context_len=context_len, score=nll, index=index, doc=jnp.zeros_like(index))
    return keep_lowest(concat(buffer, group), plan.keep), nll


def prefill_document(
    model,
    context: str,
    config: ParallelCompConfig = ParallelCompConfig(),
    *,
    template: str | PromptTemplate = "qa",
    progress: bool | None = None,
) -> Document:
    """Tokenize `context`, split it into chunks and prefill them all once, for `answer` to ask questions about.

    The chunking settings of `config` (chunk_tokens, split, chat) are the document's; its other settings (keep,
    eviction, calibration, sampling) are used by `answer`. Raises `InputError` for a template that puts the question
    before the document, and like `generate` for inputs that cannot run."""
    config = check_config(config, model.config)
    if not isinstance(context, str):
        raise InputError("context must be a string")
    start = time.perf_counter()
    tok = model.tokenizer
    template = get_template(template)
    chat = config.chat if config.chat is not None else bool(getattr(tok, "chat_template", None))
    prompt = document_prompt(tok, context, template, chunk_tokens=config.chunk_tokens, split=config.split, chat=chat)
    host = time.perf_counter() - start
    return _prefill(model, prompt, config, template, chat, host, progress)


def prefill_document_ids(
    model, context_ids: list[int], config: ParallelCompConfig = ParallelCompConfig(), *, progress: bool | None = None
) -> Document:
    """The token-level `prefill_document`: chunks `[BOS] + piece`, for `answer_ids` (as `generate_from_ids`)."""
    config = check_config(config, model.config)
    ids = [int(t) for t in context_ids]
    prompt = prompt_from_ids(ids, [0], chunk_tokens=config.chunk_tokens, bos=model.config.bos_token_id)
    prompt = dataclasses.replace(prompt, suffix=())
    return _prefill(model, prompt, config, None, False, 0.0, progress)


def _prefill(model, prompt: ChunkedPrompt, config, template, chat, host_seconds, progress) -> Document:
    if prompt.context_len(0) == 0:
        raise InputError("the document is empty and has no BOS: there is nothing to prefill")
    mc = model.config
    backend = resolve_backend(model.attention_backend)
    if progress is None:
        progress = sys.stderr.isatty()
    start = time.perf_counter()
    slots = prompt.context_slots
    full = round_up(slots, CHUNK_BUCKET)
    plan = make_plan([prompt], config, backend)
    chunk_batch = config.chunk_batch or default_chunk_batch(model, plan, full)
    schedule = plan_groups([prompt.context_len(i) for i in range(prompt.num_chunks)], full, chunk_batch)
    nbytes = prompt.num_chunks * _chunk_bytes(model, slots)
    placement = _placement(model, nbytes)
    stats = {
        "num_chunks": prompt.num_chunks,
        "chunk_batch": chunk_batch,
        "prefill_groups": len(schedule),
        "prefill_rows": sum(g.length * len(g.members) for g in schedule),
        "document_cache_bytes": int(nbytes),
        "document_cache": placement,
        "host_seconds": round(host_seconds, 3),
    }
    if placement == "recompute":
        return Document(prompt, config, template, chat, (), placement, {**stats, "document_seconds": 0.0})
    groups = []
    for group in tqdm(schedule, desc="document chunks", unit="group", disable=not progress, file=sys.stderr):
        tokens = np.zeros((len(group.members), group.length), np.int32)
        ctx = np.zeros((len(group.members),), np.int32)
        for row, i in enumerate(group.members):
            ids = prompt.chunk_ids(i)  # the document's prompt has no suffix
            tokens[row, : len(ids)] = ids
            ctx[row] = len(ids)
        k, v, valid, last = _prefill_group(model.params, tokens, ctx, config=mc, slots=slots, backend=backend)
        groups.append(ChunkGroup(group.members, k, v, valid, last, jnp.asarray(ctx)))
    jax.block_until_ready([g.last_logits for g in groups])
    if placement == "host":
        groups = [
            dataclasses.replace(g, **{f: np.asarray(getattr(g, f)) for f in ("k", "v", "valid", "last_logits")})
            for g in groups
        ]
    stats["document_seconds"] = round(time.perf_counter() - start, 3)
    return Document(prompt, config, template, chat, tuple(groups), placement, stats)


def _chunk_bytes(model, slots: int) -> int:
    """Bytes one prefilled chunk keeps: keys, values and validity over `slots`, and its last logits (float32)."""
    mc = model.config
    itemsize = jnp.dtype(param_dtype(model.params)).itemsize
    per_slot = mc.num_layers * mc.num_kv_heads * (2 * mc.head_dim * itemsize + 1)
    return slots * per_slot + 4 * mc.vocab_size


def host_free_bytes() -> int:
    """The host memory free now (Linux: available physical pages)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _placement(model, nbytes: int) -> str:
    """ "device" while the chunk caches fit beside the weights and one question's working set (a group's caches
    grown by the question, the kept buffer); else "host" while they take at most half of the host's free memory;
    else "recompute". On a CPU the device is the host."""
    device = jax.devices()[0]
    limit = (device.memory_stats() or {}).get("bytes_limit") if device.platform != "cpu" else None
    weights = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(model.params))
    if limit and weights + 2 * nbytes < 0.9 * limit:
        return "device"
    if 2 * nbytes > host_free_bytes():
        return "recompute"
    return "host" if limit else "device"


def answer(model, document: Document, question: str, *, progress: bool | None = None) -> Result:
    """Answer `question` about a prefilled `document`: the same kept chunks and answer as
    `generate(model, context, question, document.config, template=...)` (with `whole_when_fits=False` for a
    question-free template), without prefilling the document again."""
    if document.template is None:
        raise InputError("this document was prefilled from token ids; ask it with answer_ids")
    if not isinstance(question, str):
        raise InputError("the question must be a string")
    start = time.perf_counter()
    prompt = with_question(
        document.prompt,
        model.tokenizer,
        question,
        document.template,
        chunk_tokens=document.config.chunk_tokens,
        chat=document.chat,
    )
    return _answer(model, document, prompt, time.perf_counter() - start, progress)


def answer_ids(model, document: Document, question_ids: list[int], *, progress: bool | None = None) -> Result:
    """The token-level `answer`, for a document from `prefill_document_ids` (as `generate_from_ids`)."""
    ids = [int(t) for t in question_ids]
    if not ids:
        raise InputError("the question is empty: give at least one question token")
    if len(ids) > document.config.chunk_tokens:
        raise InputError(
            f"the question is {len(ids)} tokens, longer than the chunk budget ({document.config.chunk_tokens} tokens)"
        )
    return _answer(model, document, dataclasses.replace(document.prompt, suffix=tuple(ids)), 0.0, progress)


def generate_many(
    model,
    context: str,
    questions: list[str],
    config: ParallelCompConfig = ParallelCompConfig(),
    *,
    template: str | PromptTemplate = "qa",
    progress: bool | None = None,
) -> list[Result]:
    """`generate` for several questions about one context, the document prefilled once."""
    document = prefill_document(model, context, config, template=template, progress=progress)
    return [answer(model, document, q, progress=False) for q in questions]


def _answer(model, document: Document, prompt: ChunkedPrompt, host_seconds: float, progress) -> Result:
    config = document.config
    mc = model.config
    check_fits(prompt, model, config)
    if document.placement == "recompute":  # no caches kept: the single pass over the whole prompt
        return _single_pass(model, document, prompt, host_seconds, progress)
    window = config.eviction.window if config.eviction is not None else 0
    observe_end = len(prompt.suffix) - prompt.tail_len
    if window > observe_end:
        raise InputError(
            f"token eviction observes the last {window} tokens before the answer, but the question part has only "
            f"{observe_end}: lower the eviction window or use generate (it observes context rows too)"
        )
    backend = resolve_backend(model.attention_backend)
    if progress is None:
        progress = sys.stderr.isatty()
    start = time.perf_counter()
    plan = make_plan([prompt], config, backend)
    q_len = len(prompt.suffix)
    qp = round_up(q_len, QUESTION_BUCKET)
    question = pad_ids(list(prompt.suffix), qp)  # [Qp]
    targets, target_valid = question, np.arange(qp) < q_len
    heads = mc.num_heads if (config.eviction and config.eviction.per_query_head) else mc.num_kv_heads
    buffer = ChunkSet.empty(plan.keep, mc.num_layers, plan.chunk_slots, heads, mc.head_dim, param_dtype(model.params))
    nlls = []
    for g in tqdm(document.groups, desc="question over chunks", disable=not progress, file=sys.stderr):
        buffer, nll = _question_group(
            model.params,
            buffer,
            g.k,
            g.v,
            g.valid,
            g.last_logits,
            g.context_len,
            np.asarray(g.members, np.int32),
            question,
            np.int32(q_len),
            targets,
            target_valid,
            np.int32(observe_end),
            config=mc,
            plan=plan,
        )
        nlls.append(([(0, i) for i in g.members], nll))
    extra = {"document_cache": document.placement}
    [(ids, stats)] = finish_answer(model, [prompt], config, backend, buffer, plan, question[None], nlls, [extra], start)
    stats = {"method": "parallelcomp", "staged": True, "host_seconds": round(host_seconds, 3), **stats}
    stats["first_token_seconds"] = round(host_seconds + stats["prefill_seconds"], 3)
    return Result(text=answer_text(model.tokenizer, ids), tokens=ids, stats=stats)


def _single_pass(model, document: Document, prompt: ChunkedPrompt, host_seconds: float, progress) -> Result:
    """A question to a document whose caches were not kept: `generate`'s single pass over its chunks."""
    if progress is None:
        progress = sys.stderr.isatty()
    backend = resolve_backend(model.attention_backend)
    [(ids, stats)] = run_parallelcomp(model, [prompt], document.config, backend, progress)
    stats = {"method": "parallelcomp", "staged": True, "document_cache": "recompute", **stats}
    stats["host_seconds"] = round(host_seconds, 3)
    stats["first_token_seconds"] = round(host_seconds + stats["prefill_seconds"], 3)
    return Result(text=answer_text(model.tokenizer, ids), tokens=ids, stats=stats)
