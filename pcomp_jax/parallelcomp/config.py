"""Typed, validated configuration of the ParallelComp pipeline (docs/ALGORITHM.md, section 1).

Budgets are in tokens and fixed per configuration, so every jitted stage has static shapes. `compat()` gives the
official code's README defaults (docs/ALGORITHM.md 2.1) as closely as our semantics allow; the differences are
listed in `compat`'s docstring and in docs/PIPELINE.md.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from pcomp_jax.choices import Pool, Positions, Region, Split
from pcomp_jax.decoding import Sampling

REGIONS = tuple(Region)
POSITIONS = tuple(Positions)


class PipelineConfigError(ValueError):
    """An invalid ParallelComp configuration."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise PipelineConfigError(message)


def _int(name: str, value, minimum: int = 1) -> None:
    """An integer (not a bool, float or string) >= minimum."""
    _check(
        isinstance(value, numbers.Integral) and not isinstance(value, bool),
        f"{name} must be an integer, got {value!r}",
    )
    _check(value >= minimum, f"{name} must be >= {minimum}, got {value}")


def _number(name: str, value) -> None:
    """A finite real number."""
    _check(
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value),
        f"{name} must be a finite number, got {value!r}",
    )


def _choice(config, field: str, kind, what: str) -> None:
    """Replace the string in `config.field` by its `kind` member (equal to it), or raise one line."""
    object.__setattr__(config, field, kind.parse(getattr(config, field), what, PipelineConfigError))


def _optional(name: str, value, cls: type) -> None:
    _check(value is None or isinstance(value, cls), f"{name} must be a {cls.__name__} or None, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TokenEviction:
    """Query-aware token eviction inside each chunk (docs/ALGORITHM.md 1.5, 2.6).

    capacity: context tokens kept per chunk, per layer and per KV head (the BOS is kept on top of these).
    window: observation rows, the last `window` tokens of the chunk (the end of the question).
    pool_kernel: odd pooling width over the per-token scores (1 disables pooling).
    pool: "max" (default: the official code's max-pooling) or "avg" (kvpress's SnapKV: the mean over the window,
      zeros past the ends).
    per_query_head: select per query head over a cache with KV heads repeated (the official behaviour, N/K times the
      memory); by default scores are summed over each KV head's query group and the cache keeps K heads.
    """

    capacity: int = 512
    window: int = 8
    pool_kernel: int = 7
    per_query_head: bool = False
    pool: Pool = Pool.MAX

    def __post_init__(self):
        _int("eviction capacity", self.capacity)
        _int("eviction window", self.window)
        _int("pool_kernel", self.pool_kernel)
        _check(self.pool_kernel % 2 == 1, f"pool_kernel must be a positive odd number, got {self.pool_kernel}")
        _choice(self, "pool", Pool, "pool")
        _check(
            isinstance(self.per_query_head, bool), f"per_query_head must be True or False, got {self.per_query_head!r}"
        )


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Attention calibration at the second prefill (docs/ALGORITHM.md 1.7, 2.8).

    In layers lo..hi (0-based, inclusive), keys whose attention from the last `observe_last` question tokens exceeds
    `threshold` and that lie in `region` are removed from the cache, per KV head; every head then removes the same
    number of keys, padding with its lowest-attention keys. Regions count valid cache keys in order:
    "sink" the first `region_width`, "recent" the last `region_width`, "middle" those strictly between, "all" any.
    """

    region: Region = Region.SINK
    layers: tuple[int, int] = (0, 7)
    threshold: float = 0.1
    observe_last: int = 1
    region_width: int = 100

    def __post_init__(self):
        _choice(self, "region", Region, "calibration region")
        layers = self.layers
        _check(
            isinstance(layers, tuple | list)
            and len(layers) == 2
            and all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in layers),
            f"calibration layers must be a pair of integers (lo, hi), got {layers!r}",
        )
        object.__setattr__(self, "layers", (int(layers[0]), int(layers[1])))  # hashable: configs are jit-static
        lo, hi = self.layers
        _check(0 <= lo <= hi, f"calibration layers must satisfy 0 <= lo <= hi, got {self.layers}")
        _number("calibration threshold", self.threshold)
        _check(self.threshold > 0, f"calibration threshold must be > 0, got {self.threshold}")
        _int("observe_last", self.observe_last)
        _int("region_width", self.region_width)


@dataclasses.dataclass(frozen=True)
class ParallelCompConfig:
    """ParallelComp settings.

    chunk_tokens: context tokens per chunk (the prompt prefix and question come on top of these). None (default):
      the model's preset (`presets.preset_for`: 512 for models under 1B parameters, the paper's 7600 for 8K-window
      models above); the value used is in `Result.stats["chunk_budget"]`.
    keep_chunks: chunks kept after chunk eviction (the lowest question NLL wins). None (default): the model's
      preset (2 for small models, the paper's 3 above).
    keep_margin: a chunk after the best is kept only if its question NLL is at most `keep_margin` nats above the
      best's, so `keep_chunks` is an upper bound: a chunk that stands out alone is read alone, near-tied ones
      together. None (default): the model's preset when `keep_chunks` is unset too (no preset sets one today:
      docs/RESULTS.md "The keep margin"), otherwise none: exactly `keep_chunks` are read, as in the paper.
    nll_bias: weigh the kept chunks by their question NLL instead of reading them as equals: the question's and the
      answer's attention logits toward kept chunk j are lowered by `nll_bias` x (its NLL - the best kept chunk's),
      which scales the attention mass it receives by exp(-nll_bias x gap) (the shared BOS or head excepted). A
      soft form of `keep_margin`: near-ties are read almost as equals, a chunk far behind the best almost not.
      None (default): the model's preset when `keep_chunks` is unset too (2 for models under 1B parameters:
      docs/RESULTS.md "Kept chunks weighed by their NLL"; none above), otherwise equal weights, as in the paper.
      0: equal weights.
    chunk_batch: at most this many chunks prefilled together in one vmapped call; peak memory holds keep_chunks +
      chunk_batch chunk caches, whatever the context length. None (default): chosen from the model, the chunk length
      and the device (`schedule.auto_chunk_batch`: about 32K rows a group on an accelerator, within its memory;
      4 on a CPU); the choice is in `Result.stats["chunk_batch"]`.
    split: "tokens" (exact token budget, default) or "chars" (the official character split, for parity checks).
    eviction: optional token eviction inside chunks; calibration: optional attention calibration.
    positions: where the kept chunks sit when the question reads them. "shared" (default, the paper): each keeps
      the positions it was prefilled at, all from 0, and the question follows the longest. "consecutive": the kept
      chunks move to consecutive positions in document order (their cached keys are rotated; every BOS but the first
      is dropped as before), so they read as one short document; needs the kept chunks, the question and the answer
      to fit the training window.
    shared_head: the question reads the chunks' common head (BOS + the template's instruction prefix, chat header
      included: the same tokens at the same positions in every chunk, so the same keys) once, from the first kept
      chunk, instead of once per kept chunk (False, default: the paper's merge, which drops only the repeated BOS).
      With token eviction the head is then always kept and never a candidate, like the BOS.
    whole_when_fits: `generate` reads a prompt with no question (a template without `{question}`, such as
      `summarize`, or LongBench's prompts without `{input}`) in one pass, as method "full", when the document, the
      prompt and the answer fit the model's training window: with no question to rank chunks by, reading some of
      them only loses content (docs/RESULTS.md, "Summaries of documents that fit"). `stats["read_whole"]` says
      which were. False: always chunk, as the official code does (`compat()`). Questions are always answered by
      ParallelComp; the staged path (`generate_many`) always chunks.
    chat: wrap the prompt in the tokenizer's chat template (None: when the tokenizer has one).
    sampling: decoding options (greedy by default; EOS banned for the first token as in the official code).
    """

    chunk_tokens: int | None = None
    keep_chunks: int | None = None
    keep_margin: float | None = None
    nll_bias: float | None = None
    chunk_batch: int | None = None
    split: Split = Split.TOKENS
    eviction: TokenEviction | None = None
    calibration: Calibration | None = None
    positions: Positions = Positions.SHARED
    shared_head: bool = False
    whole_when_fits: bool = True
    chat: bool | None = None
    sampling: Sampling = Sampling(max_new_tokens=32, min_new_tokens=1)

    def __post_init__(self):
        for name in ("chunk_tokens", "keep_chunks"):
            if getattr(self, name) is not None:
                _int(name, getattr(self, name))
        for name in ("keep_margin", "nll_bias"):  # nats, or nats of logit per nat of NLL
            value = getattr(self, name)
            if value is not None:
                _number(name, value)
                _check(value >= 0, f"{name} must be >= 0, got {value}")
                object.__setattr__(self, name, float(value))  # hashable and exact in the jit key
        if self.chunk_batch is not None:
            _int("chunk_batch", self.chunk_batch)
        _choice(self, "split", Split, "split")
        _optional("eviction", self.eviction, TokenEviction)
        _optional("calibration", self.calibration, Calibration)
        _choice(self, "positions", Positions, "positions")
        for name in ("shared_head", "whole_when_fits"):
            _check(isinstance(getattr(self, name), bool), f"{name} must be True or False, got {getattr(self, name)!r}")
        _check(self.chat in (None, True, False), f"chat must be True, False or None, got {self.chat!r}")
        _check(isinstance(self.sampling, Sampling), f"sampling must be a Sampling, got {self.sampling!r}")

    def replace(self, **changes) -> ParallelCompConfig:
        return dataclasses.replace(self, **changes)


def compat(trained_context: int = 8192) -> ParallelCompConfig:
    """The official README configuration (docs/ALGORITHM.md 2.1) mapped to our knobs.

    Official: chunk budget cml = 7600 for 8K models (3600 for 4K), topk_windows=-3, character split, no token
    eviction, no calibration, no chat template, greedy with EOS banned at the first step. Remaining differences,
    by design: one BOS per chunk and none before the question (the official question carries a second BOS, B8); the
    chunk NLL is a plain mean (the official divides by count - 1, which does not change the ranking, B17); chunks are
    padded on the right with their own positions instead of processed one by one (same results, 2.4); GQA caches keep
    K heads unless `TokenEviction.per_query_head` (B18). Bug ids and section numbers refer to docs/ALGORITHM.md.
    """
    official = {8192: 7600, 4096: 3600}  # cml (docs/ALGORITHM.md 2.2) for Llama-3 (8K) and Llama-2 (4K)
    chunk = official.get(trained_context, max(256, int(trained_context * 0.9)))
    return ParallelCompConfig(
        chunk_tokens=chunk, keep_chunks=3, chunk_batch=1, split="chars", chat=False, whole_when_fits=False
    )
