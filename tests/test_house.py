"""The house reads one way (issue 14): no module of pcomp_jax imports another's private names, and the imports
between its modules form no cycle, lazy (in-function) imports included. Read from the source with `ast`; nothing is
imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pcomp_jax"


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__)."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _absolute(node: ast.ImportFrom, here: str, is_package: bool) -> str:
    """The module an ImportFrom names, with a relative import resolved against the importing module `here`."""
    if node.level == 0:
        return node.module or ""
    base = here.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, str | None, int]]:
    """(module imported, name taken from it or None, line) for every import of a package module in `path`."""
    out = []
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, name, is_package)
            if source.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                # `from pcomp_jax.x import y` where y is a module imports that module, not a name of x
                out.append((sub, None, node.lineno) if sub in known else (source, alias.name, node.lineno))
    return out


def private_attributes(path: Path, known: dict[str, Path]) -> list[str]:
    """`m._name` where m is a package module bound by an import in `path` (`from pcomp_jax import m`, `import ... as
    m`): a private name reached through the module instead of imported."""
    tree = ast.parse(path.read_text())
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {a.asname for a in node.names if a.asname and a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == PACKAGE:
            bound |= {a.asname or a.name for a in node.names if f"{node.module}.{a.name}" in known}
    return [
        f"{shown}:{node.lineno} reads {node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in bound
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {m for m, _, _ in imports(name, path, known) if m in known and m != name} for name, path in known.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan), as a path."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checks_see_a_cycle_and_a_private_import(tmp_path):
    """The two checks on a made-up pair of modules: they would fail on what they look for."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    path = tmp_path / "m.py"
    path.write_text("from pcomp_jax.cache import _hidden, KVCache\nfrom . import rope\n")
    known = modules()
    found = imports("pcomp_jax.m", path, known)
    assert ("pcomp_jax.cache", "_hidden", 1) in found and ("pcomp_jax.rope", None, 2) in found
    path.write_text("from pcomp_jax import rope\nimport pcomp_jax.cache as c\nrope._table(c._slot, rope.apply)\n")
    assert sorted(private_attributes(path, known)) == [f"{path}:3 reads c._slot", f"{path}:3 reads rope._table"]


def test_no_module_imports_another_modules_private_names():
    known = modules()
    private = [
        f"{path.relative_to(ROOT)}:{line} imports {taken} from {source}"
        for name, path in known.items()
        for source, taken, line in imports(name, path, known)
        if taken is not None and taken.startswith("_") and not taken.startswith("__") and source != name
    ]
    private += [line for path in known.values() for line in private_attributes(path, known)]
    assert not private, "\n".join(private)


def test_the_package_imports_form_no_cycle():
    edges = graph()
    assert len(edges) > 30 and edges["pcomp_jax.parallelcomp.pipeline"]  # the graph is really read
    assert not cycles(edges), cycles(edges)
