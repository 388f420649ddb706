"""Run pcomp-jax as if only its declared requirements were installed (used by test_packaging.py).

    python tests/base_install.py [--extra eval] [--undeclare jinja2] -- SCRIPT ARGS...

Computes the distributions that `pip install pcomp-jax[EXTRAS]` would bring (the package's requirements from its
installed metadata, closed over their own requirements), hides every top-level module of every other installed
distribution (as if it were absent: imports fail and `importlib.util.find_spec` says None), then runs SCRIPT.
`--undeclare NAME` drops a requirement first, to show that the check catches a missing one.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import runpy
import sys

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PACKAGE = "pcomp-jax"


def requirement_closure(extras: list[str], undeclared: list[str]) -> set[str]:
    """Canonical names of the distributions `pip install pcomp-jax[extras]` installs (pcomp-jax included)."""
    env = default_environment()
    skip = {canonicalize_name(n) for n in undeclared}
    seen: set[str] = set()
    todo = [(PACKAGE, tuple(extras))]
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        if (key, wanted) in seen or key in skip:
            continue
        seen.add((key, wanted))
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue  # a requirement whose marker held but that is not installed here: nothing of it can be hidden
        for line in requires:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in ("", *wanted)):
                continue
            todo.append((req.name, tuple(sorted(req.extras))))
    return {key for key, _ in seen}


def hide_undeclared(allowed: set[str]) -> list[str]:
    """Make every top-level module that belongs only to distributions outside `allowed` unimportable."""
    owners: dict[str, set[str]] = {}
    for module, dists in md.packages_distributions().items():
        owners.setdefault(module, set()).update(canonicalize_name(d) for d in dists)
    hidden = sorted(m for m, dists in owners.items() if not dists & allowed and m not in sys.stdlib_module_names)
    for module in hidden:
        sys.modules[module] = None  # import raises ImportError; importlib.util.find_spec returns None
    return hidden


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("--undeclare", action="append", default=[])
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    allowed = requirement_closure(args.extra, args.undeclare)
    hidden = hide_undeclared(allowed)
    print(f"base_install: {len(allowed)} distributions allowed, {len(hidden)} modules hidden", file=sys.stderr)
    sys.argv = [args.script, *args.args]
    runpy.run_path(args.script, run_name="__main__")


if __name__ == "__main__":
    main()
