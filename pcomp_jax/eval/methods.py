"""Method names for evaluation: a pipeline method plus optional `+` modifiers.

    parallelcomp                     the base configuration
    parallelcomp+evict               token eviction, capacity 512 (parallelcomp+evict-256: capacity 256)
    parallelcomp+calib-sink-0-7      calibration, region sink, layers 0..7 (any region, any range)
    parallelcomp+keep-2              keep 2 chunks
    full, truncate, streaming        the baselines (no modifiers)

Adding a modifier is one entry in MODIFIERS: a prefix and a function (config, argument text) -> config.
"""

from __future__ import annotations

from collections.abc import Callable

from pcomp_jax.parallelcomp.config import Calibration, ParallelCompConfig, TokenEviction
from pcomp_jax.parallelcomp.pipeline import METHODS


def _evict(config: ParallelCompConfig, arg: str) -> ParallelCompConfig:
    return config.replace(eviction=TokenEviction(capacity=int(arg) if arg else 512))


def _calib(config: ParallelCompConfig, arg: str) -> ParallelCompConfig:
    region, lo, hi = arg.split("-")
    return config.replace(calibration=Calibration(region=region, layers=(int(lo), int(hi))))


def _keep(config: ParallelCompConfig, arg: str) -> ParallelCompConfig:
    return config.replace(keep_chunks=int(arg))


MODIFIERS: dict[str, Callable[[ParallelCompConfig, str], ParallelCompConfig]] = {
    "evict": _evict,
    "calib": _calib,
    "keep": _keep,
}


def parse_method(name: str, base: ParallelCompConfig) -> tuple[str, ParallelCompConfig]:
    """(pipeline method, config) for a method name such as `parallelcomp+calib-sink-0-7`."""
    method, *mods = name.split("+")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} in {name!r} (choose from {', '.join(METHODS)})")
    if mods and method != "parallelcomp":
        raise ValueError(f"modifiers apply to parallelcomp only, got {name!r}")
    config = base
    for mod in mods:
        key, _, arg = mod.partition("-")
        if key not in MODIFIERS:
            raise ValueError(f"unknown modifier {mod!r} in {name!r} (known: {', '.join(MODIFIERS)})")
        try:
            config = MODIFIERS[key](config, arg)
        except (ValueError, TypeError) as err:
            raise ValueError(f"bad modifier {mod!r} in {name!r}: {err}") from None
    return method, config
