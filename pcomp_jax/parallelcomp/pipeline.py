"""ParallelComp end to end: chunk -> parallel prefill -> score -> select -> merge -> second prefill -> decode.

`generate(model, context=..., question=...)` runs one of three methods on the same prompt, so results compare like
with like:
- "parallelcomp": chunks prefilled in parallel groups (`jax.vmap` over the chunk axis) with positions 0..L-1 each,
  the `keep_chunks` with the lowest question NLL kept in a fixed-size buffer, optional token eviction and
  calibration, then the question and the answer decoded over the merged cache (docs/ALGORITHM.md, section 1).
- "full": the whole prompt in one causal pass (positions run past the training window).
- "truncate" and "streaming": single-pass baselines on the same prompt (pcomp_jax/baselines.py).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from pcomp_jax import text as user_text
from pcomp_jax.attention import last_rows, resolve_backend
from pcomp_jax.baselines import run_baseline
from pcomp_jax.choices import Method
from pcomp_jax.decoding import decode, decode_in_place
from pcomp_jax.model import forward, param_dtype
from pcomp_jax.parallelcomp.calibration import calibration_filter
from pcomp_jax.parallelcomp.chunking import ChunkedPrompt, InputError, chunk_prompt, prompt_from_ids, round_up
from pcomp_jax.parallelcomp.config import Calibration, ParallelCompConfig, TokenEviction
from pcomp_jax.parallelcomp.eviction import evict_tokens, keep_context
from pcomp_jax.parallelcomp.merge import merged_batch
from pcomp_jax.parallelcomp.presets import resolve
from pcomp_jax.parallelcomp.prompts import PromptTemplate, get_template
from pcomp_jax.parallelcomp.schedule import CHUNK_BUCKET, auto_chunk_batch, plan_groups
from pcomp_jax.parallelcomp.scoring import question_nll
from pcomp_jax.parallelcomp.select import ChunkSet, concat, keep_lowest, within_margin
from pcomp_jax.parallelcomp.stats import Stats
from pcomp_jax.sharding import chunk_shards

METHODS = tuple(Method)
QUESTION_BUCKET = 32


@dataclasses.dataclass(frozen=True)
class Result:
    """The answer text (special tokens removed), its token ids, and statistics of the run (`stats.Stats`)."""

    text: str
    tokens: list[int]
    stats: Stats


@dataclasses.dataclass(frozen=True)
class Plan:
    """Static settings of the jitted stages (hashable)."""

    keep: int
    context_slots: int  # slots per chunk before eviction: BOS + prefix + piece budget
    read_once: int  # leading slots of every chunk read from the first kept chunk only: BOS (shared_head: BOS + prefix)
    eviction: TokenEviction | None
    backend: str
    positions: str = "shared"
    docs: int = 1  # documents in the batch, each keeping its own `keep` chunks
    keep_margin: float | None = None  # kept chunks further than this above the best are dropped before the merge
    nll_bias: float | None = None  # the question's logits toward a kept chunk lowered by this x its NLL gap to the best

    @property
    def chunk_slots(self) -> int:
        """Slots per chunk in the buffer (after eviction)."""
        if self.eviction is None:
            return self.context_slots
        return self.read_once + min(self.eviction.capacity, self.context_slots - self.read_once)


def _group_body(
    params,
    buffer: ChunkSet,
    tokens,
    total_len,
    context_len,
    index,
    doc,
    targets,
    target_valid,
    observe_end,
    *,
    config,
    plan: Plan,
):
    """Prefill a group of chunks [C, T] in parallel, score them, compress them, and keep each document's best in the
    buffer.

    doc [C]: each chunk's document row; targets, target_valid [docs, Qp]: each document's question tokens.
    observe_end [C]: token eviction observes the `window` tokens before this index (the end of the question, before
    any chat-template tail)."""
    t = tokens.shape[1]
    qp = targets.shape[1]

    def one_chunk(tok, total, ctx, end, targets, target_valid):
        pos = jnp.arange(t)
        logits_at = jnp.clip(ctx - 1 + jnp.arange(qp), 0, t - 1)  # logits predicting the question tokens
        score_rows = None
        if plan.eviction is not None:
            score_rows = last_rows(end[None], plan.eviction.window)[0]  # -1 (ignored) before the chunk start
        out, cache = forward(
            params,
            config,
            tok[None],
            pos[None],
            token_valid=(pos < total)[None],
            logits_at=logits_at[None],
            score_rows=None if score_rows is None else score_rows[None],
            attention_backend=plan.backend,
        )
        nll = question_nll(out.logits[0], targets, target_valid)
        k, v, valid = (x[:, 0] for x in cache.stacked())  # [L, T, K, H], [L, T, K]
        scores = None if out.scores is None else out.scores[:, 0]  # [L, N, T]
        if t < plan.context_slots:  # a short chunk run at a shorter padded length: room for the buffer's slots
            room = plan.context_slots - t
            k, v, valid = pad_slots(k, v, valid, room)
            scores = None if scores is None else jnp.pad(scores, [(0, 0), (0, 0), (0, room)])
        if plan.eviction is None:
            k, v, valid = keep_context(k, v, valid, ctx, context_slots=plan.context_slots)
        else:
            k, v, valid = evict_tokens(
                k,
                v,
                valid,
                scores,
                ctx,
                bos_len=plan.read_once,
                context_slots=plan.context_slots,
                eviction=plan.eviction,
            )
        return k, v, valid, nll

    k, v, valid, nll = jax.vmap(one_chunk)(tokens, total_len, context_len, observe_end, targets[doc], target_valid[doc])
    nll = jnp.where(index >= 0, nll, jnp.inf)
    group = ChunkSet(k=k, v=v, valid=valid, context_len=context_len, score=nll, index=index, doc=doc)
    return keep_lowest(concat(buffer, group), plan.keep, plan.docs), nll


_group_step = functools.partial(jax.jit, static_argnames=("config", "plan"))(_group_body)


@functools.partial(jax.jit, static_argnames=("config", "plan", "mesh"))
def _sharded_group_step(
    params,
    buffer,
    tokens,
    total_len,
    context_len,
    index,
    doc,
    targets,
    target_valid,
    observe_end,
    *,
    config,
    plan,
    mesh,
):
    """`_group_step` with the group's rows and the buffer split over the mesh's `chunks` axis: each shard prefills
    its rows and keeps its own `plan.keep` best (pcomp_jax/sharding.py). The group's scores come back replicated (a
    few floats), so every process of a multi-host mesh can read them."""
    rows, same = PartitionSpec("chunks"), PartitionSpec()
    step = jax.shard_map(
        functools.partial(_group_body, config=config, plan=plan),
        mesh=mesh,
        axis_names={"chunks"},  # manual over chunks; a model axis stays XLA's (tensor-parallel weights)
        in_specs=(same, rows, rows, rows, rows, rows, rows, same, same, rows),
        out_specs=(rows, rows),
    )
    buffer, nll = step(params, buffer, tokens, total_len, context_len, index, doc, targets, target_valid, observe_end)
    return buffer, jax.lax.with_sharding_constraint(nll, NamedSharding(mesh, same))


@functools.partial(jax.jit, static_argnames=("keep", "docs", "mesh"))
def _merge_shards(buffer: ChunkSet, *, keep: int, docs: int, mesh) -> ChunkSet:
    """Each document's `keep` best of the shards' buffers, once after the last group, replicated over the mesh (the
    kept chunks' caches only: what the question's prefill reads on every device)."""
    return jax.lax.with_sharding_constraint(keep_lowest(buffer, keep, docs), NamedSharding(mesh, PartitionSpec()))


@functools.partial(jax.jit, static_argnames=("config", "plan", "calibration", "extra", "every_position"))
def second_prefill(
    params,
    buffer: ChunkSet,
    q_tokens,
    q_len,
    *,
    config,
    plan: Plan,
    calibration: Calibration | None,
    extra: int,
    every_position: bool = False,
):
    """Merge each document's kept chunks and prefill its question over them, a batch row per document.

    q_tokens [docs, Qp], q_len [docs]. Returns the last logits [docs, V] (or, with `every_position`, logits at every
    question position [docs, Qp, V]), the cache, the next positions [docs], the kept indices [docs, keep]."""
    qp = q_tokens.shape[1]
    logits_at = jnp.broadcast_to(jnp.arange(qp), q_tokens.shape) if every_position else (q_len - 1)[:, None]
    out, cache, first_position, kept = question_prefill(
        params,
        buffer,
        q_tokens,
        q_len,
        config=config,
        plan=plan,
        calibration=calibration,
        extra=extra,
        logits_at=logits_at,
    )
    logits = out.logits if every_position else out.logits[:, 0]
    return logits, cache, first_position + q_len, kept


def question_prefill(
    params,
    buffer: ChunkSet,
    q_tokens,
    q_len,
    *,
    config,
    plan: Plan,
    calibration: Calibration | None,
    extra: int,
    logits_at=None,
    score_rows=None,
):
    """The body of `second_prefill` (call it under jit): the merged cache of each document's kept chunks with `extra`
    free slots after the question, and the question's forward over it (calibrated when `calibration` is given).

    logits_at, score_rows [docs, P]: indices into the question of the logits and observation scores to return (see
    `pcomp_jax.forward`). Returns the forward's output, the cache, the question's first positions [docs] and the kept
    indices [docs, keep] in document order."""
    rope = config if plan.positions == "consecutive" else None
    buffer = within_margin(buffer, plan.keep_margin, plan.docs)
    cache, first_position, kept = merged_batch(
        buffer, plan.docs, shared_len=plan.read_once, consecutive_rope=rope, nll_bias=plan.nll_bias
    )
    qp = q_tokens.shape[1]
    cache = cache.grow(qp + extra)
    positions = first_position[:, None] + jnp.arange(qp)[None]  # [docs, Qp]
    token_valid = jnp.arange(qp)[None] < q_len[:, None]
    out, cache = forward(
        params,
        config,
        q_tokens,
        positions,
        cache,
        token_valid=token_valid,
        logits_at=logits_at,
        score_rows=score_rows,
        key_filter=None if calibration is None else calibration_filter(calibration),
        attention_backend=plan.backend,
    )
    return out, cache, first_position, kept


def pad_slots(k, v, valid, room: int):
    """One chunk's cache k, v [L, T, K, H] and valid [L, T, K] with `room` empty (invalid) slots appended."""
    k, v = (jnp.pad(x, [(0, 0), (0, room), (0, 0), (0, 0)]) for x in (k, v))
    return k, v, jnp.pad(valid, [(0, 0), (0, room), (0, 0)])


def pad_ids(ids: list[int], length: int) -> np.ndarray:
    out = np.zeros((length,), np.int32)
    out[: len(ids)] = ids
    return out


def check_config(config: ParallelCompConfig, model_config) -> ParallelCompConfig:
    """`config` with the model's preset for its unset knobs (`presets.resolve`); refuses settings that cannot work
    with this model (checked from its config alone, before any weights load)."""
    config = resolve(config, model_config)
    calibration = config.calibration
    if calibration is not None and calibration.layers[1] >= model_config.num_layers:
        raise InputError(
            f"calibration layers {calibration.layers[0]}-{calibration.layers[1]} go past the model's last layer "
            f"({model_config.num_layers - 1}; layers are 0-based)"
        )
    return config


def make_plan(prompts: Sequence[ChunkedPrompt], config: ParallelCompConfig, backend: str) -> Plan:
    """The static plan of a batch of documents (one or more prompts, each with its own question). Chunk caches take
    the largest context budget of the batch: a shorter document's extra slots are invalid keys."""
    if config.shared_head and len({p.head_len for p in prompts}) > 1:
        raise InputError(
            "shared_head needs the same head (BOS and instruction) in every document of a batch, and this template "
            "puts each question before its document; answer these documents one call at a time"
        )
    return Plan(
        keep=min(config.keep_chunks, max(p.num_chunks for p in prompts)),  # short documents need no room for more
        context_slots=max(p.context_slots for p in prompts),
        read_once=prompts[0].head_len if config.shared_head else len(prompts[0].bos),
        eviction=config.eviction,
        backend=backend,
        positions=config.positions,
        docs=len(prompts),
        keep_margin=config.keep_margin,
        nll_bias=config.nll_bias,
    )


def check_fits(prompt: ChunkedPrompt, model, config: ParallelCompConfig) -> None:
    window = model.config.trained_context
    longest = max(len(p) for p in prompt.pieces)
    need = prompt.head_len + longest + len(prompt.suffix) + config.sampling.max_new_tokens
    if need > window:
        raise InputError(
            f"a chunk does not fit the model's {window}-token training window: {prompt.head_len} (BOS + instruction) "
            f"+ {longest} (chunk text) + {len(prompt.suffix)} (question) + {config.sampling.max_new_tokens} (answer) "
            f"= {need}; lower chunk_tokens or max_new_tokens"
        )
    if config.positions == "consecutive":
        keep = min(config.keep_chunks, prompt.num_chunks)
        once = prompt.head_len if config.shared_head else len(prompt.bos)
        need = keep * (prompt.head_len + longest) - (keep - 1) * once + need - prompt.head_len - longest
        if need > window:
            raise InputError(
                f"positions='consecutive' needs the {keep} kept chunks, the question and the answer in the model's "
                f"{window}-token training window ({need} tokens); lower chunk_tokens or keep_chunks, or use 'shared'"
            )


def select_chunks(model, prompts: Sequence[ChunkedPrompt], config: ParallelCompConfig, backend: str, progress: bool):
    """Prefill every chunk of a batch of documents (their chunks share the groups), score each against its own
    document's question and keep each document's best: (buffer [docs * keep], plan, the groups' scores as
    ([(document, chunk)], device array) pairs for `chunk_scores`, peak caches alive, the questions padded to their
    bucket [docs, Qp], schedule statistics). Nothing here waits for the device, so the caller's next compilations
    overlap the groups still running."""
    mc = model.config
    heads = mc.num_heads if (config.eviction and config.eviction.per_query_head) else mc.num_kv_heads
    plan = make_plan(prompts, config, backend)
    q_lens = np.array([len(p.suffix) for p in prompts])
    qp = round_up(int(q_lens.max()), QUESTION_BUCKET)
    questions = np.stack([pad_ids(list(p.suffix), qp) for p in prompts])  # [docs, Qp]
    target_valid = np.arange(qp)[None] < q_lens[:, None]
    full = round_up(plan.context_slots + int(q_lens.max()), CHUNK_BUCKET)
    shards = chunk_shards(model.mesh)  # a group's rows split over the mesh's chunks axis, a buffer per shard
    chunk_batch = config.chunk_batch or default_chunk_batch(model, plan, full) * shards
    chunks = [(d, i) for d, p in enumerate(prompts) for i in range(p.num_chunks)]  # (document row, chunk index)
    groups = plan_groups([prompts[d].chunk_len(i) for d, i in chunks], full, chunk_batch)
    layout = np.tile(np.repeat(np.arange(plan.docs), plan.keep), shards)  # each shard's buffer: [docs, keep]
    buffer = ChunkSet.empty(
        len(layout), mc.num_layers, plan.chunk_slots, heads, mc.head_dim, param_dtype(model.params), doc=layout
    )
    step = _group_step if shards == 1 else functools.partial(_sharded_group_step, mesh=model.mesh)
    group_nlls = []  # device arrays, read once at the end: no host synchronisation between groups
    peak = 0
    for group in tqdm(groups, desc="chunk groups", unit="group", disable=not progress, file=sys.stderr):
        size = round_up(len(group.members), shards)  # rows past the members are empty (index -1, score +inf)
        tokens = np.zeros((size, group.length), np.int32)
        total, ctx, doc, observe_end = (np.zeros((size,), np.int32) for _ in range(4))
        index = np.full((size,), -1, np.int32)
        for row, m in enumerate(group.members):
            d, i = chunks[m]
            ids = prompts[d].chunk_ids(i)
            tokens[row, : len(ids)] = ids
            total[row], ctx[row], index[row], doc[row] = len(ids), prompts[d].context_len(i), i, d
            observe_end[row] = len(ids) - prompts[d].tail_len
        peak = max(peak, buffer.count + size)  # the buffer and this group are all the chunk caches alive
        buffer, nll = step(
            model.params,
            buffer,
            tokens,
            total,
            ctx,
            index,
            doc,
            questions,
            target_valid,
            observe_end,
            config=mc,
            plan=plan,
        )
        group_nlls.append(([chunks[m] for m in group.members], nll))
    if shards > 1:
        buffer = _merge_shards(buffer, keep=plan.keep, docs=plan.docs, mesh=model.mesh)
    schedule = {
        "chunk_batch": chunk_batch,
        "prefill_groups": len(groups),
        "prefill_rows": sum(g.length * len(g.members) for g in groups),  # rows computed, padding included
    }
    return buffer, plan, group_nlls, peak, questions, schedule


def chunk_scores(group_nlls, num_chunks: Sequence[int]) -> list[list[float]]:
    """Each document's per-chunk question NLL in chunk order (rounded for the stats), from `select_chunks`'
    ([(document, chunk)], nll [>= members]) pairs; rows past the members are padding. Waits for the groups."""
    scores = [np.zeros((n,), np.float32) for n in num_chunks]
    for members, nll in group_nlls:
        for (d, i), value in zip(members, np.asarray(nll), strict=False):
            scores[d][i] = value
    return [[round(float(x), 4) for x in s] for s in scores]


def default_chunk_batch(model, plan: Plan, full: int) -> int:
    """`schedule.auto_chunk_batch` for this model on the default device. A chunk in flight holds its cache before
    compression and its activations (at most about 4D + 3F float32 values a row), beside the weights and the kept
    chunks' compressed caches."""
    mc = model.config
    itemsize = jnp.dtype(param_dtype(model.params)).itemsize
    kv_row = 2 * mc.num_layers * mc.num_kv_heads * mc.head_dim * itemsize
    per_chunk = full * (kv_row + 4 * (4 * mc.hidden_size + 3 * mc.intermediate_size))
    device = jax.devices()[0]
    limit = (device.memory_stats() or {}).get("bytes_limit") if device.platform != "cpu" else None
    free = None
    if limit:
        weights = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(model.params))
        free = int(0.9 * limit) - weights - plan.keep * plan.chunk_slots * kv_row
    return auto_chunk_batch(full, device.platform, per_chunk, free)


def run_parallelcomp(model, prompts: Sequence[ChunkedPrompt], config, backend: str, progress: bool):
    """[(ids, stats)] for a batch of documents."""
    start = time.perf_counter()
    buffer, plan, group_nlls, peak, questions, schedule = select_chunks(model, prompts, config, backend, progress)
    extras = [{"peak_chunk_caches": peak, **schedule} for _ in prompts]
    return finish_answer(model, prompts, config, backend, buffer, plan, questions, group_nlls, extras, start)


def finish_answer(
    model,
    prompts: Sequence[ChunkedPrompt],
    config,
    backend: str,
    buffer,
    plan: Plan,
    questions,
    group_nlls,
    extras,
    start,
):
    """After chunk selection: merge each document's kept chunks, prefill its question over them, decode the batch.
    [(ids, stats)] per document; the prefill seconds count from `start`. `group_nlls`: the chunk groups' scores
    (`select_chunks`), read only once the question's prefill is queued.

    Nothing waits for the device until the decode loop is compiled: on a fresh process the compilations of the
    second prefill and of the decode loop run while the chunk groups are still computing (on a 2-core CPU, about
    half of their ~7 s); when they are cached, looking them up costs ~2 ms while the device works."""
    mc = model.config
    q_lens = np.array([len(p.suffix) for p in prompts], np.int32)
    logits, cache, position, kept = second_prefill(
        model.params,
        buffer,
        jnp.asarray(questions),
        jnp.asarray(q_lens),
        config=mc,
        plan=plan,
        calibration=config.calibration,
        extra=config.sampling.max_new_tokens,
    )
    decode_args = (model.params, mc, cache, logits, position)
    decode_options = {"sampling": config.sampling, "eos_ids": tuple(mc.eos_token_ids), "attention_backend": backend}
    # the call below finds it compiled; lowering reads only shapes
    decode_in_place.lower(*decode_args, **decode_options).compile()
    scores = chunk_scores(group_nlls, [p.num_chunks for p in prompts])
    held = cache_tokens(cache.valid)  # [docs, L] after the question; queued before decode takes the cache
    jax.block_until_ready(logits)
    prefill_seconds = time.perf_counter() - start
    start = time.perf_counter()
    out, counts = decode(*decode_args, **decode_options)
    out, counts, kept, position = (np.asarray(x) for x in (out, counts, kept, position))
    decode_seconds = time.perf_counter() - start
    held = np.asarray(held)
    results = []
    for d, prompt in enumerate(prompts):
        stats = {
            "num_chunks": prompt.num_chunks,
            "kept_chunks": sorted(int(i) for i in kept[d] if i >= 0),
            "chunk_tokens": [len(p) for p in prompt.pieces],
            "chunk_budget": config.chunk_tokens,  # the setting (the model's preset when not given)
            "keep_margin": config.keep_margin,
            "shared_head": config.shared_head,
            "nll_bias": config.nll_bias,
            "head_tokens": prompt.head_len,
            "question_tokens": int(q_lens[d]),
            "cache_tokens_per_layer": held[d].tolist(),
            "chunk_scores": scores[d],
            "question_position": int(position[d]) - int(q_lens[d]),
            **extras[d],
            "prefill_seconds": round(prefill_seconds, 3),
            "decode_seconds": round(decode_seconds, 3),
        }
        if len(prompts) > 1:
            stats["batch"] = len(prompts)  # the times are the whole batch's
        results.append((out[d, : int(counts[d])].tolist(), stats))
    return results


@jax.jit
def cache_tokens(valid) -> jax.Array:
    """Tokens each document's merged cache holds in every layer (the fewest over its KV heads): [docs, L] from the
    layers' valid masks [docs, slots, K], in one device call."""
    return jnp.stack([v.sum(axis=1).min(axis=1) for v in valid], axis=1)


def generate(
    model,
    context: str | Sequence[str],
    question: str | Sequence[str],
    config: ParallelCompConfig = ParallelCompConfig(),
    *,
    method: str = "parallelcomp",
    template: str | PromptTemplate = "qa",
    progress: bool | None = None,
) -> Result | list[Result]:
    """Answer `question` about `context` with `model` (a `pcomp_jax.Model`).

    A list of contexts is a batch of documents answered together (one `Result` each, in order): their chunks share
    the prefill groups and their answers are decoded as one batch, with the same answers as separate calls. Give one
    question per context, or one question for all. (Several questions about one context: `generate_many`.)

    An empty context is allowed: the prompt then has no document and this is plain generation
    (`stats["empty_context"]` is True). `progress` shows a bar over chunk groups (default: when stderr is a
    terminal). Raises `InputError` or `PipelineConfigError` with a clear message for inputs that cannot run.
    """
    config = _check_call(model, config, method)
    contexts, questions, batched = _batch(context, question, lambda x: isinstance(x, str), "string")
    start = time.perf_counter()
    tok = model.tokenizer
    chat = config.chat if config.chat is not None else bool(getattr(tok, "chat_template", None))
    template = get_template(template)
    prompts = [
        chunk_prompt(tok, c, q, template, chunk_tokens=config.chunk_tokens, split=config.split, chat=chat)
        for c, q in zip(contexts, questions, strict=True)
    ]
    read_whole = method == "parallelcomp" and config.whole_when_fits and not template.needs_question
    single_pass = method != "parallelcomp" or read_whole
    context_ids = [
        _context_ids(tok, c, p, config.split) if single_pass else None for c, p in zip(contexts, prompts, strict=True)
    ]
    methods = [method] * len(prompts)
    if read_whole:  # a question-free prompt that fits the window is read in one pass (whole_when_fits)
        window = model.config.trained_context - config.sampling.max_new_tokens
        fits = [len(p.whole_ids(ids)) <= window for p, ids in zip(prompts, context_ids, strict=True)]
        methods = ["full" if fit else method for fit in fits]
    host_seconds = time.perf_counter() - start
    results = _answer(model, prompts, context_ids, config, methods, progress, host_seconds, [c == "" for c in contexts])
    if read_whole:
        for result, how in zip(results, methods, strict=True):
            result.stats["read_whole"] = how != method
    return results if batched else results[0]


def _context_ids(tokenizer, context: str, prompt: ChunkedPrompt, split: str) -> list[int]:
    """The whole context's ids for a single pass: the token split holds them already; the char split re-cuts the
    text."""
    return [t for piece in prompt.pieces for t in piece] if split == "tokens" else user_text.encode(tokenizer, context)


def generate_from_ids(
    model,
    context_ids: Sequence[int] | Sequence[Sequence[int]],
    question_ids: Sequence[int] | Sequence[Sequence[int]],
    config: ParallelCompConfig = ParallelCompConfig(),
    *,
    method: str = "parallelcomp",
    progress: bool | None = None,
) -> Result | list[Result]:
    """The token-level entry point: answer `question_ids` about `context_ids`, each chunk `[BOS] + piece +
    question` with no instruction or chat template (the model's BOS if its config has one). For callers that
    tokenize themselves, and for models without a tokenizer (random weights in benchmarks: `Result.text` is then
    empty). A list of id lists is a batch of documents, as in `generate`. Same methods, statistics and errors."""
    config = _check_call(model, config, method)
    contexts, questions, batched = _batch(context_ids, question_ids, _is_ids, "list of token ids")
    start = time.perf_counter()
    contexts = [[int(t) for t in c] for c in contexts]
    prompts = [
        prompt_from_ids(c, [int(t) for t in q], chunk_tokens=config.chunk_tokens, bos=model.config.bos_token_id)
        for c, q in zip(contexts, questions, strict=True)
    ]
    host_seconds = time.perf_counter() - start
    methods = [method] * len(prompts)
    results = _answer(model, prompts, contexts, config, methods, progress, host_seconds, [not c for c in contexts])
    return results if batched else results[0]


def _is_ids(x) -> bool:
    return isinstance(x, Sequence | np.ndarray) and all(isinstance(t, int | np.integer) for t in x)


def _batch(context, question, single, what: str) -> tuple[list, list, bool]:
    """(contexts, questions, whether the call was batched) from a call's context and question arguments; `single`
    tells one context (or question) from a list of them."""
    if single(context):
        if not single(question):
            raise InputError(
                f"context and question must each be a {what}; for several questions about one document use "
                "generate_many"
            )
        return [context], [question], False
    if not isinstance(context, Sequence) or not context or not all(single(c) for c in context):
        raise InputError(f"context must be a {what} or a non-empty list of them")
    questions = [question] * len(context) if single(question) else question
    if not isinstance(questions, Sequence) or not all(single(q) for q in questions):
        raise InputError(f"question must be a {what} or a list of them, one per context")
    if len(questions) != len(context):
        raise InputError(f"{len(context)} contexts but {len(questions)} questions: give one question per context")
    return list(context), list(questions), True


def _check_call(model, config, method: str) -> ParallelCompConfig:
    """The resolved config of a call (see `check_config`)."""
    Method.parse(method, "method", InputError)
    if not isinstance(config, ParallelCompConfig):
        raise InputError(f"config must be a ParallelCompConfig, got {config!r}")
    return check_config(config, model.config)


def _answer(model, prompts, context_ids, config, methods, progress, host_seconds, empty_context) -> list[Result]:
    """Run `methods[i]` on tokenized prompt i (a batch of documents: those for ParallelComp run together);
    `context_ids[i]` (the whole context) for the single-pass baselines, which answer one document at a time."""
    backend = resolve_backend(model.attention_backend)
    if progress is None:
        progress = sys.stderr.isatty()
    answers = [None] * len(prompts)
    chunked = [i for i, m in enumerate(methods) if m == "parallelcomp"]
    for i in chunked:
        check_fits(prompts[i], model, config)
    if chunked:
        together = run_parallelcomp(model, [prompts[i] for i in chunked], config, backend, progress)
        for i, answer in zip(chunked, together, strict=True):
            answers[i] = answer
    for i, method in enumerate(methods):
        if method != "parallelcomp":
            answers[i] = run_baseline(model, prompts[i], context_ids[i], config, method, backend)
    tok = model.tokenizer
    results = []
    for (ids, stats), method, empty in zip(answers, methods, empty_context, strict=True):
        stats = {"method": method, "empty_context": empty, "host_seconds": round(host_seconds, 3), **stats}
        if "prefill_seconds" in stats:  # the first token is the argmax of the second prefill's last logits
            stats["first_token_seconds"] = round(host_seconds + stats["prefill_seconds"], 3)
        results.append(Result(text=answer_text(tok, ids), tokens=ids, stats=stats))
    return results


def answer_text(tokenizer, ids: list[int]) -> str:
    """The answer's text without special tokens ("" without a tokenizer)."""
    return tokenizer.decode(ids, skip_special_tokens=True).strip() if tokenizer is not None else ""
