"""Where the question looks in the merged cache: the attention-bias analysis of ParallelComp (docs/ALGORITHM.md 1.7).

Under parallel attention the question reads several chunks that were each prefilled from position 0, side by side.
The paper (Xiong et al., ICML 2025, sections 3-4) finds three biases in that attention, varying with depth: sinks at
the start of every chunk, recency (the question's own tokens and the chunk ends) and a weakly read middle; its
calibration (`Calibration`) evicts keys with outlying attention in chosen layers. This module measures them with a
real model, reusing the pipeline's stages (chunk selection, merge, the question's prefill):

    sel = analysis.select(model, context, question)           # prefill, score and keep chunks once (as `generate`)
    amap = analysis.question_attention(model, sel)            # attention per layer and slot of the merged cache
    amap.region_mass()                                        # [layers, 4]: start, middle, end, question
    analysis.question_attention(model, sel, Calibration(region="sink", layers=(0, 9)))
    analysis.answer(model, sel, Calibration(...)).text        # the answer with that calibration, same kept chunks

The attention is that of the question's last `rows` tokens (by default the last one, whose logits give the first
answer token, as calibration observes it), averaged over those rows, each with its full softmax normaliser, in the
question's prefill over the merged cache: the pass `generate` runs, after calibration when one is given (removed
keys then receive nothing).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pcomp_jax.attention import resolve_backend
from pcomp_jax.parallelcomp.chunking import ChunkedPrompt, InputError, chunk_prompt
from pcomp_jax.parallelcomp.config import Calibration, ParallelCompConfig
from pcomp_jax.parallelcomp.merge import merged_batch
from pcomp_jax.parallelcomp.pipeline import (
    Plan,
    Result,
    answer_text,
    check_config,
    check_fits,
    chunk_scores,
    finish_answer,
    question_prefill,
    select_chunks,
)
from pcomp_jax.parallelcomp.prompts import PromptTemplate, get_template
from pcomp_jax.parallelcomp.select import ChunkSet, within_margin

REGIONS = ("start", "middle", "end", "question")  # region codes 0..3 of `AttentionMap.region`


@dataclasses.dataclass(frozen=True)
class Selection:
    """One (context, question) after chunk selection: the kept chunks' caches (`buffer`, as `generate` keeps them),
    the question tokens padded to their bucket [1, Qp], and what `finish_answer` needs to answer from them."""

    prompt: ChunkedPrompt
    config: ParallelCompConfig  # resolved (the model's preset filled in)
    plan: Plan
    buffer: ChunkSet
    question: np.ndarray
    group_nlls: list[Any]
    backend: str

    @property
    def scores(self) -> list[float]:
        """Question NLL of every chunk, in chunk order (lower: more relevant)."""
        return chunk_scores(self.group_nlls, [self.prompt.num_chunks])[0]

    @property
    def kept(self) -> list[int]:
        """The kept chunks' indices, in document order."""
        return sorted(int(i) for i in np.asarray(self.buffer.index) if i >= 0)


@dataclasses.dataclass(frozen=True)
class AttentionMap:
    """The question's attention over the merged cache; S = its slots (the kept chunks' slots in document order, then
    the question's).

    head_weights [layers, N, S] float32: per query head, the attention mass on each slot (sums to 1 over the slots);
    valid [layers, S, K] bool: which keys each KV head could see (after calibration, if any);
    seen [S] bool: slots holding keys the question sees without calibration (in layer 0; every layer without token
      eviction);
    chunk [S] int: the kept chunk a slot belongs to (its index in the document), -1 for the question's slots, -2 for
      the slots of a buffer entry left empty (a chunk the keep margin dropped: nothing there is visible);
    region [S] int: index into REGIONS (start / end: the first / last `width` keys of each kept chunk, counted over
      the keys the question sees without calibration; slots nobody sees are labelled middle and receive nothing)."""

    head_weights: np.ndarray
    valid: np.ndarray
    seen: np.ndarray
    chunk: np.ndarray
    region: np.ndarray
    width: int
    calibration: Calibration | None

    @property
    def weights(self) -> np.ndarray:
        """[layers, S]: the attention mass on each slot, mean over query heads."""
        return self.head_weights.mean(axis=1)

    def region_mass(self) -> np.ndarray:
        """[layers, len(REGIONS)]: the attention mass on each region, per layer (rows sum to 1)."""
        return np.stack([self.weights[:, self.region == r].sum(-1) for r in range(len(REGIONS))], axis=-1)

    def removed(self) -> np.ndarray:
        """[layers, S, K]: keys the question sees without calibration that calibration removed."""
        return self.seen[None, :, None] & ~self.valid


def select(
    model,
    context: str,
    question: str,
    config: ParallelCompConfig = ParallelCompConfig(),
    *,
    template: str | PromptTemplate = "qa",
) -> Selection:
    """Chunk, prefill, score and keep chunks as `generate` does (same config resolution, checks and choices)."""
    config = check_config(config, model.config)
    if not isinstance(context, str) or not isinstance(question, str):
        raise InputError("context and question must be strings")
    tok = model.tokenizer
    chat = config.chat if config.chat is not None else bool(getattr(tok, "chat_template", None))
    prompt = chunk_prompt(
        tok, context, question, get_template(template), chunk_tokens=config.chunk_tokens, split=config.split, chat=chat
    )
    check_fits(prompt, model, config)
    backend = resolve_backend(model.attention_backend)
    buffer, plan, group_nlls, _, questions, _ = select_chunks(model, [prompt], config, backend, progress=False)
    buffer = within_margin(buffer, plan.keep_margin, plan.docs)  # the chunks the question reads (idempotent later)
    return Selection(prompt, config, plan, buffer, np.asarray(questions), group_nlls, backend)


def answer(model, selection: Selection, calibration: Calibration | None = None) -> Result:
    """The answer decoded over the selection's kept chunks with `calibration` (None: none), as `generate` with that
    calibration would give (the chunk selection does not depend on it)."""
    config = check_config(selection.config.replace(calibration=calibration), model.config)
    [(ids, stats)] = finish_answer(
        model,
        [selection.prompt],
        config,
        selection.backend,
        selection.buffer,
        selection.plan,
        selection.question,
        selection.group_nlls,
        [{}],
        time.perf_counter(),
    )
    return Result(text=answer_text(model.tokenizer, ids), tokens=ids, stats={"method": "parallelcomp", **stats})


def question_attention(
    model, selection: Selection, calibration: Calibration | None = None, *, rows: int = 1, width: int = 16
) -> AttentionMap:
    """The attention of the question's last `rows` tokens over the merged cache of `selection`, per layer and query
    head, after `calibration` if given. `width`: how many keys count as a chunk's start and as its end."""
    q_len = len(selection.prompt.suffix)
    if not 1 <= rows <= q_len:
        raise InputError(f"rows must be between 1 and the question's {q_len} tokens, got {rows}")
    if width < 1:
        raise InputError(f"width must be at least 1, got {width}")
    if calibration is not None:
        check_config(selection.config.replace(calibration=calibration), model.config)  # refuses layers past the last
    scores, valid, seen, kept = _question_scores(
        model.params,
        selection.buffer,
        jnp.asarray(selection.question),
        jnp.asarray([q_len], jnp.int32),
        config=model.config,
        plan=selection.plan,
        calibration=calibration,
        rows=rows,
    )
    scores, valid, seen, kept = (np.asarray(x) for x in (scores, valid, seen, kept))
    slots = scores.shape[-1]
    chunk = np.full((slots,), -1)  # the merged cache: each kept chunk's slots in turn, then the question's
    entries = kept.size * selection.plan.chunk_slots
    chunk[:entries] = np.repeat(np.where(kept >= 0, kept, -2), selection.plan.chunk_slots)
    question = np.arange(selection.question.shape[1]) < q_len
    seen = np.concatenate([seen, question])  # [S]
    region = np.full((slots,), REGIONS.index("question"))
    region[:entries] = REGIONS.index("middle")  # every buffer entry's slots; each chunk's start and end below
    for c in kept[kept >= 0]:
        mine = np.flatnonzero((chunk == c) & seen)  # the chunk's visible keys, in slot order
        region[mine[-width:]] = REGIONS.index("end")
        region[mine[:width]] = REGIONS.index("start")  # a chunk shorter than 2 * width: its start wins
    return AttentionMap(scores / rows, valid, seen, chunk, region, width, calibration)


@functools.partial(jax.jit, static_argnames=("config", "plan", "calibration", "rows"))
def _question_scores(params, buffer: ChunkSet, q_tokens, q_len, *, config, plan: Plan, calibration, rows: int):
    """The question's prefill over the merged cache (`pipeline.question_prefill`, as `generate` runs it) observing
    its last `rows` tokens. Returns their attention summed over the rows [L, N, S], the keys' validity after
    calibration [L, S, K], which merged-cache slots hold visible keys before it [S - Qp] (layer 0, any KV head) and
    the kept chunks [keep] in document order. One document (q_tokens [1, Qp], q_len [1])."""
    score_rows = (q_len - rows)[:, None] + jnp.arange(rows)[None]  # [1, rows]
    out, cache, _, kept = question_prefill(
        params,
        buffer,
        q_tokens,
        q_len,
        config=config,
        plan=plan,
        calibration=calibration,
        extra=0,
        score_rows=score_rows,
    )
    before, _, _ = merged_batch(buffer, plan.docs, shared_len=plan.read_once)  # validity only: positions do not matter
    valid = jnp.stack([v[0] for v in cache.valid])  # [L, S, K]
    return out.scores[:, 0], valid, before.valid[0][0].any(-1), kept[0]
