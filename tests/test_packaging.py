"""What `pip install .` declares covers what the package imports (issue: jinja2 was missing), the wheel installs
no top-level `convert`, and a missing optional extra is one line before the run starts."""

from __future__ import annotations

import ast
import importlib.metadata as md
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def declared() -> set[str]:
    """Every distribution pcomp-jax declares, in its base requirements or in any extra."""
    return {canonicalize_name(Requirement(r).name) for r in md.requires("pcomp-jax") or []}


def imported_modules() -> dict[str, str]:
    """Top-level third-party modules imported anywhere under pcomp_jax/, with one file that imports each."""
    found = {}
    for path in sorted((ROOT / "pcomp_jax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "pcomp_jax":
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_module_is_declared():
    owners = md.packages_distributions()
    missing = {}
    for module, where in imported_modules().items():
        dists = {canonicalize_name(d) for d in owners.get(module, [])}
        assert dists, f"{module} (imported in {where}) is not installed here"
        if not dists & declared():
            missing[module] = where
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_wheel_installs_no_top_level_convert(tmp_path):
    """Build the wheel as `pip install .` would and read what it would put into site-packages."""
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*build, str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("pcomp_jax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"pcomp_jax"}
    assert "pcomp_jax/convert/hf_to_flax.py" in names and "pcomp_jax/text.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "pcomp-jax-convert = pcomp_jax.convert.hf_to_flax:console_main" in scripts


@pytest.fixture(scope="module")
def chat_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint with a chat template (rendering it needs jinja2, the dependency that was missing)."""
    path = tmp_path_factory.mktemp("chat") / "ckpt"
    shutil.copytree(tiny_checkpoint[0], path)
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return path


def run_as_installed(args: list[str], *workload: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(HERE / "base_install.py"), *args, str(HERE / "base_workload.py"), *workload]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_base_install_converts_answers_with_chat_and_evaluates(chat_checkpoint, tiny_hf_dir, tmp_path):
    from pcomp_jax import load

    assert load(chat_checkpoint).tokenizer.chat_template == CHAT_TEMPLATE
    hf_dir, _ = tiny_hf_dir()
    proc = run_as_installed([], str(chat_checkpoint), str(hf_dir), str(tmp_path))
    assert proc.returncode == 0 and "base_workload: ok" in proc.stdout, proc.stderr[-3000:]


def test_base_install_check_catches_an_undeclared_dependency(chat_checkpoint, tiny_hf_dir, tmp_path):
    hf_dir, _ = tiny_hf_dir()
    proc = run_as_installed(["--undeclare", "jinja2"], str(chat_checkpoint), str(hf_dir), str(tmp_path))
    assert proc.returncode != 0 and "jinja2" in proc.stderr, proc.stderr[-3000:]


def test_eval_without_the_extra_names_it_before_loading(chat_checkpoint, tiny_hf_dir, tmp_path):
    hf_dir, _ = tiny_hf_dir()
    proc = run_as_installed([], str(chat_checkpoint), str(hf_dir), str(tmp_path), "plots")
    assert proc.returncode != 0
    assert "error: plotting needs matplotlib, from the eval extra: pip install 'pcomp-jax[eval]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_eval_extra_covers_plots(chat_checkpoint, tiny_hf_dir, tmp_path):
    hf_dir, _ = tiny_hf_dir()
    proc = run_as_installed(["--extra", "eval"], str(chat_checkpoint), str(hf_dir), str(tmp_path), "plots")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "eval" / "summary.json").exists()
