"""Bad inputs to the Python API that needs a checkpoint (`pcomp_jax.load`, `Model.complete`): one typed error with a
clear message each. The command line's versions are in test_cli.py, the pipeline config's in test_pipeline.py."""

from __future__ import annotations

import shutil

import pytest

import pcomp_jax
from pcomp_jax import CheckpointError, InputError, Sampling


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return pcomp_jax.load(tiny_checkpoint[0], attention_backend="reference")


def test_prompt_plus_answer_past_the_window(model):
    with pytest.raises(InputError, match=r"past the model's 512-token window.*--context-file"):
        model.complete("hi", Sampling(max_new_tokens=1_000_000))
    assert len(model.complete("hi", Sampling(max_new_tokens=2)).tokens) == 2  # within the window it runs


def test_empty_prompt(model):
    with pytest.raises(InputError, match="the prompt is empty"):
        model.complete("")


@pytest.mark.parametrize("dtype", ["int8", "float99", "float16"])
def test_load_refuses_unsupported_dtype(tiny_checkpoint, dtype):
    with pytest.raises(InputError, match=rf"unsupported dtype '{dtype}' \(choose from float32, bfloat16\)"):
        pcomp_jax.load(tiny_checkpoint[0], dtype=dtype)


def test_truncated_params_cannot_be_read(tiny_checkpoint, tmp_path):
    ckpt = shutil.copytree(tiny_checkpoint[0], tmp_path / "ckpt")
    largest = max((f for f in (ckpt / "params").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    data = largest.read_bytes()
    largest.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"the params in .*params cannot be read \(.*\); convert the model again"):
        pcomp_jax.load(ckpt)


def test_missing_params_directory(tiny_checkpoint, tmp_path):
    ckpt = shutil.copytree(tiny_checkpoint[0], tmp_path / "ckpt")
    shutil.rmtree(ckpt / "params")
    with pytest.raises(CheckpointError, match="has no params/ directory; convert the model again"):
        pcomp_jax.load(ckpt)
