"""Shared fixtures: tiny HF model directories and a converted tiny checkpoint (see hf_tiny.py, tiny_files.py)."""

from __future__ import annotations

import pytest
from tiny_files import save_tiny_hf


@pytest.fixture
def tiny_hf_dir(tmp_path):
    """Factory: `tiny_hf_dir(kind="llama", fmt="safetensors", **model_kwargs) -> (directory, HF model)`."""
    count = 0

    def make(kind: str = "llama", fmt: str = "safetensors", **model_kwargs):
        nonlocal count
        count += 1
        path = tmp_path / f"hf{count}"
        return path, save_tiny_hf(path, kind, fmt, **model_kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """(checkpoint directory, HF model): a tiny random Llama (GQA 2) converted to float32 once per session."""
    from convert import convert

    root = tmp_path_factory.mktemp("tiny_checkpoint")
    model = save_tiny_hf(root / "hf", "llama")
    return convert(root / "hf", root / "ckpt", progress=False), model
