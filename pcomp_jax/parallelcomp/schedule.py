"""Which chunks are prefilled together, at which padded length, and how many at once by default.

A vmapped prefill computes every row of its [C, T] input, padding included, so the schedule decides the work:
- no empty rows: m chunks of one length run as ceil(m / chunk_batch) groups whose sizes differ by at most one
  (18 chunks at chunk_batch 4: 4, 4, 4, 3, 3), never padded up to chunk_batch with empty chunks;
- no long padding for a short chunk: a chunk runs at the smallest of a few padded lengths that holds it (two rungs
  an octave below the full length, see `length_ladder`), so the token split's short last chunk costs a 768-row
  pass for its 532 tokens of a 128K document at 7680-token chunks, and a 2944-row one for 2069 tokens at 32K, instead
  of a 7808-row one.

Chunk eviction keeps the lowest (score, later index) over all chunks, a total order, so the grouping and the order
of groups change no result. Compiled shapes: per padded length at most two group sizes per document, and across
documents at most chunk_batch; the lengths form a fixed ladder, so nearby documents share every compilation.
"""

from __future__ import annotations

import dataclasses

from pcomp_jax.parallelcomp.chunking import round_up

CHUNK_BUCKET = 128  # padded chunk lengths are multiples of this
GROUP_TOKENS = 32768  # the automatic chunk_batch fills a group with about this many rows


@dataclasses.dataclass(frozen=True)
class Group:
    """Chunks (document indices) prefilled together at padded length `length`."""

    length: int
    members: tuple[int, ...]


def length_ladder(full: int) -> list[int]:
    """Padded lengths a chunk may run at, longest first: `full`, then two rungs an octave (full * 3/4, full / 2,
    full * 3/8, full / 4, ...), each rounded up to CHUNK_BUCKET, down to one bucket. A chunk pads by less than half
    its length (one rung an octave pads up to double), at about two compiled lengths per halving."""
    rungs = {full}
    top = full
    while top > CHUNK_BUCKET:
        rungs.update((round_up(top * 3 // 4, CHUNK_BUCKET), round_up(top // 2, CHUNK_BUCKET)))
        top //= 2
    return sorted((t for t in rungs if t <= full), reverse=True)


def balanced_sizes(count: int, chunk_batch: int) -> list[int]:
    """Sizes of ceil(count / chunk_batch) groups holding `count` chunks, larger first, differing by at most one."""
    groups = -(-count // chunk_batch)
    small, extra = divmod(count, groups)
    return [small + 1] * extra + [small] * (groups - extra)


def plan_groups(lengths: list[int], full: int, chunk_batch: int) -> list[Group]:
    """Groups for chunks of these token counts (each <= full), in document order within each padded length."""
    ladder = length_ladder(full)
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        fits = [t for t in ladder if t >= n]
        by_length.setdefault(fits[-1], []).append(i)
    groups = []
    for length in sorted(by_length, reverse=True):
        members = by_length[length]
        start = 0
        for size in balanced_sizes(len(members), chunk_batch):
            groups.append(Group(length, tuple(members[start : start + size])))
            start += size
    return groups


def auto_chunk_batch(full: int, platform: str, per_chunk_bytes: int = 0, free_bytes: int | None = None) -> int:
    """The default chunk_batch: on an accelerator, enough chunks that a group has about GROUP_TOKENS rows (small
    chunks of a small model leave the device idle between launches: SmolLM2's 2K chunks ran 0.132 s at 16 a group
    against 0.182 s at 4 over 128K tokens on an H200), between 1 and 16, and no more than `free_bytes` (the device
    memory left beside the weights and the kept chunks) holds at `per_chunk_bytes` each; on a CPU, 4 (its matmuls
    are large enough already, and its memory is the host's)."""
    if platform == "cpu":
        return 4
    batch = max(1, min(16, GROUP_TOKENS // full))
    if free_bytes is not None and per_chunk_bytes > 0:
        batch = max(1, min(batch, free_bytes // per_chunk_bytes))
    return batch
