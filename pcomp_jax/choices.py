"""The API's named choices as string enums.

A member equals its string (`Region.SINK == "sink"`, with the same hash), so the API and the CLI keep accepting the
plain strings, jit caches keyed on either agree, and JSON writes the string. `parse` turns a user's value into the
member, or raises one clear line naming the allowed values.
"""

from __future__ import annotations

from enum import StrEnum


class Choice(StrEnum):
    @classmethod
    def parse(cls, value, what: str, error: type[Exception] = ValueError):
        """The member equal to `value`; otherwise `error("unknown <what> ... (choose from ...)")`."""
        try:
            return cls(value)
        except ValueError:
            raise error(f"unknown {what} {value!r} (choose from {', '.join(cls)})") from None


class Backend(Choice):
    """Attention backends (`pcomp_jax.attention`)."""

    AUTO = "auto"
    REFERENCE = "reference"
    CUDNN = "cudnn"
    PALLAS = "pallas"


class Method(Choice):
    """How a question over a long context is answered: ParallelComp or a baseline (`pcomp_jax.baselines`)."""

    PARALLELCOMP = "parallelcomp"
    FULL = "full"
    TRUNCATE = "truncate"
    STREAMING = "streaming"


class Region(Choice):
    """Where attention calibration removes keys (`Calibration.region`)."""

    SINK = "sink"
    RECENT = "recent"
    MIDDLE = "middle"
    ALL = "all"


class Split(Choice):
    """How a context is cut into chunks: an exact token budget, or the official character split."""

    TOKENS = "tokens"
    CHARS = "chars"


class Positions(Choice):
    """Where the kept chunks sit when the question reads them (`ParallelCompConfig.positions`)."""

    SHARED = "shared"
    CONSECUTIVE = "consecutive"


class Pool(Choice):
    """Pooling of token-eviction scores (`TokenEviction.pool`)."""

    MAX = "max"
    AVG = "avg"
