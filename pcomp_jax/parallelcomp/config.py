"""Typed, validated configuration of the ParallelComp pipeline (PARALLELCOMP.md Part 1).

Budgets are in tokens and fixed per configuration, so every jitted stage has static shapes. `compat()` gives the
official code's README defaults (Part 2, H.1) as closely as our semantics allow; the differences are listed there.
"""

from __future__ import annotations

import dataclasses

from pcomp_jax.decoding import Sampling

REGIONS = ("sink", "recent", "middle", "all")


class PipelineConfigError(ValueError):
    """An invalid ParallelComp configuration."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise PipelineConfigError(message)


@dataclasses.dataclass(frozen=True)
class TokenEviction:
    """Query-aware token eviction inside each chunk (Part 1.4; Part 2, E.2).

    capacity: context tokens kept per chunk, per layer and per KV head (the BOS is kept on top of these).
    window: observation rows, the last `window` tokens of the chunk (the end of the question).
    pool_kernel: odd max-pooling width over the per-token scores (1 disables pooling).
    per_query_head: select per query head over a cache with KV heads repeated (the official behaviour, N/K times the
      memory); by default scores are summed over each KV head's query group and the cache keeps K heads.
    """

    capacity: int = 512
    window: int = 8
    pool_kernel: int = 7
    per_query_head: bool = False

    def __post_init__(self):
        _check(self.capacity >= 1, f"eviction capacity must be >= 1, got {self.capacity}")
        _check(self.window >= 1, f"eviction window must be >= 1, got {self.window}")
        _check(
            self.pool_kernel >= 1 and self.pool_kernel % 2 == 1,
            f"pool_kernel must be a positive odd number, got {self.pool_kernel}",
        )


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Attention calibration at the second prefill (Part 1.6; Part 2, F.2).

    In layers lo..hi (0-based, inclusive), keys whose attention from the last `observe_last` question tokens exceeds
    `threshold` and that lie in `region` are removed from the cache, per KV head; every head then removes the same
    number of keys, padding with its lowest-attention keys. Regions count valid cache keys in order:
    "sink" the first `region_width`, "recent" the last `region_width`, "middle" those strictly between, "all" any.
    """

    region: str = "sink"
    layers: tuple[int, int] = (0, 7)
    threshold: float = 0.1
    observe_last: int = 1
    region_width: int = 100

    def __post_init__(self):
        _check(self.region in REGIONS, f"calibration region must be one of {REGIONS}, got {self.region!r}")
        lo, hi = self.layers
        _check(0 <= lo <= hi, f"calibration layers must satisfy 0 <= lo <= hi, got {self.layers}")
        _check(self.threshold > 0, f"calibration threshold must be > 0, got {self.threshold}")
        _check(self.observe_last >= 1, f"observe_last must be >= 1, got {self.observe_last}")
        _check(self.region_width >= 1, f"region_width must be >= 1, got {self.region_width}")


@dataclasses.dataclass(frozen=True)
class ParallelCompConfig:
    """ParallelComp settings.

    chunk_tokens: context tokens per chunk (the prompt prefix and question come on top of these).
    keep_chunks: chunks kept after chunk eviction (the lowest question NLL wins).
    chunk_batch: chunks prefilled together in one vmapped call; peak memory holds keep_chunks + chunk_batch chunk
      caches, whatever the context length.
    split: "tokens" (exact token budget, default) or "chars" (the official character split, for parity checks).
    eviction: optional token eviction inside chunks; calibration: optional attention calibration.
    chat: wrap the prompt in the tokenizer's chat template (None: when the tokenizer has one).
    sampling: decoding options (greedy by default; EOS banned for the first token as in the official code).
    """

    chunk_tokens: int = 2048
    keep_chunks: int = 3
    chunk_batch: int = 4
    split: str = "tokens"
    eviction: TokenEviction | None = None
    calibration: Calibration | None = None
    chat: bool | None = None
    sampling: Sampling = Sampling(max_new_tokens=32, min_new_tokens=1)

    def __post_init__(self):
        _check(self.chunk_tokens >= 1, f"chunk_tokens must be >= 1, got {self.chunk_tokens}")
        _check(self.keep_chunks >= 1, f"keep_chunks must be >= 1, got {self.keep_chunks}")
        _check(self.chunk_batch >= 1, f"chunk_batch must be >= 1, got {self.chunk_batch}")
        _check(self.split in ("tokens", "chars"), f"split must be 'tokens' or 'chars', got {self.split!r}")

    def replace(self, **changes) -> ParallelCompConfig:
        return dataclasses.replace(self, **changes)


def compat(trained_context: int = 8192) -> ParallelCompConfig:
    """The official README configuration (Part 2, H.1) mapped to our knobs.

    Official: chunk budget cml = 7600 for 8K models (3600 for 4K), topk_windows=-3, character split, no token
    eviction, no calibration, no chat template, greedy with EOS banned at the first step. Remaining differences,
    by design: one BOS per chunk and none before the question (the official question carries a second BOS, K.8); the
    chunk NLL is a plain mean (the official divides by count - 1, which does not change the ranking, D.1); chunks are
    padded on the right with their own positions instead of processed one by one (same results, C); GQA caches keep
    K heads unless `TokenEviction.per_query_head`.
    """
    official = {8192: 7600, 4096: 3600}  # cml of Part 2, B.2 for Llama-3 (8K) and Llama-2 (4K)
    chunk = official.get(trained_context, max(256, int(trained_context * 0.9)))
    return ParallelCompConfig(chunk_tokens=chunk, keep_chunks=3, chunk_batch=1, split="chars", chat=False)
