"""`python -m pcomp_jax.bench`: the whole command small on the CPU, the column arithmetic, and the official
schedule's re-implementation in HF PyTorch (test_smollm2.py checks that it keeps the same chunks as our pipeline on
the real SmolLM2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pcomp_jax.bench.cli import derive, main
from pcomp_jax.bench.shapes import SHAPES, layer_params, prefill_flops, weight_bytes


def test_llama3_8b_shape_arithmetic():
    c = SHAPES["llama3-8b"]
    assert layer_params(c) == 32 * (4096 * 128 * (32 + 32 + 8 + 8) + 3 * 4096 * 14336)
    total = layer_params(c) + 2 * 128256 * 4096 + 32 * 2 * 4096 + 4096  # + embeddings, LM head and norms
    assert total == 8_030_261_248  # the parameter count of Llama-3-8B
    # ~14 GFLOP per token in the layers; 128K as one causal pass ~ 1.8 PFLOP linear + 4.5 PFLOP attention
    assert 1.75e15 < prefill_flops(c, [131072], 0) - 2 * 2 * 32 * 32 * 128 * 131072**2 / 2 < 1.9e15
    assert 14.9e9 < weight_bytes(c) < 15.1e9  # a decode step reads the layers and LM head, one embedding row


def test_random_params_have_the_model_layout():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from pcomp_jax.bench.shapes import random_params
    from pcomp_jax.model import init_params

    c = SHAPES["tiny"]
    params = random_params(c, 0, "bfloat16")
    want = jax.eval_shape(lambda: init_params(c, jax.random.key(0), jnp.bfloat16))
    assert jax.tree.structure(params) == jax.tree.structure(want)
    assert all(
        a.shape == b.shape and a.dtype == b.dtype
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want), strict=True)
    )
    assert bool(jnp.all(params["layers_0"]["attn_norm"]["scale"] == 1))
    kernel = np.asarray(params["layers_1"]["mlp"]["down_proj"]["kernel"], np.float32)
    assert abs(kernel.std() * c.intermediate_size**0.5 - 1) < 0.1  # variance 1 / fan-in


def test_derived_columns():
    c = SHAPES["tiny"]
    row = {"status": "ok", "method": "hf", "length": 1000, "prefill_s": 0.5, "decode_s": 0.3, "new_tokens": 4}
    row.update(chunk_lengths=[1021], logit_rows=1, cache_tokens=1021, peak_bytes=2**31)
    ceil = {"matmul_flops_per_s": 1e12, "copy_bytes_per_s": 1e11}
    out = derive(row, c, {"dtype": "float32"}, ceil)
    assert out["tokens_per_s"] == 2000 and out["peak_gib"] == 2
    assert out["decode_ms_per_token"] == pytest.approx(100)  # HF: 3 decode steps after the prefill's token
    assert out["mfu"] == pytest.approx(prefill_flops(c, [1021], 1) / 0.5 / 1e12)
    assert derive({"status": "out of memory"}, c, {}, ceil) == {"status": "out of memory"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """`--smoke --mesh chunks=2` on 2 virtual CPU devices, run once for the two tests below: every method of the
    smoke run plus the parallelcomp-mesh row (the one-device rows only use the first device). (completed process,
    JSON result, output directory)"""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "pcomp_jax.bench", "--smoke", "--mesh", "chunks=2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, json.loads(out.read_text()), out.parent


def test_smoke_runs_every_method_and_writes_json_and_plot(smoke_run):
    proc, result, out_dir = smoke_run
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"parallelcomp", "parallelcomp-mesh", "dense", "hf", "official"}
    for method, r in rows.items():
        assert r["status"] == "ok", (method, r["status"])
        assert r["prefill_s"] > 0 and r["tokens_per_s"] > 0 and r["decode_ms_per_token"] > 0
    assert rows["parallelcomp"]["chunks"] == 4 and len(rows["parallelcomp"]["kept_chunks"]) == 3
    assert rows["official"]["chunks"] == 4 and len(rows["official"]["kept_chunks"]) == 3
    assert result["ceilings"]["matmul_flops_per_s"] > 0 and result["ceilings"]["copy_bytes_per_s"] > 0
    assert "| 1K | parallelcomp |" in proc.stdout and "matmul peak" in proc.stdout
    assert (out_dir / "bench.png").stat().st_size > 10_000


def test_bad_options_are_one_line_errors(capsys):
    assert main(["--baselines", "dense,vllm"]) == 2
    assert capsys.readouterr().err == "error: unknown baseline vllm (choose from dense, hf, official)\n"


def test_a_checkpoint_is_driven_with_its_tokenizer_on_real_text(tiny_checkpoint, tmp_path):
    """--model CKPT: ours through `generate` on essay text (host seconds measured), the dense baseline beside it."""
    out = tmp_path / "bench.json"
    cmd = [
        "--smoke",
        "--model",
        str(tiny_checkpoint[0]),
        "--baselines",
        "dense",
        "--lengths",
        "600",
        "--chunk-tokens",
        "192",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pcomp_jax.bench", *cmd, "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["parallelcomp"]["status"] == rows["dense"]["status"] == "ok"
    assert rows["parallelcomp"]["host_s"] > 0 and rows["parallelcomp"]["chunks"] >= 2


def test_a_named_shape_is_driven_with_a_tokenizer_on_both_sides(tiny_checkpoint, tmp_path):
    """--tokenizer DIR: ours and the official schedule both tokenize the same essay text inside their timed call
    (host seconds on both rows), over the same number of chunks."""
    out = tmp_path / "bench.json"
    cmd = ["--smoke", "--tokenizer", str(tiny_checkpoint[0]), "--baselines", "official", "--lengths", "600"]
    proc = subprocess.run(
        [sys.executable, "-m", "pcomp_jax.bench", *cmd, "--chunk-tokens", "192", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["parallelcomp"]["status"] == rows["official"]["status"] == "ok"
    assert rows["parallelcomp"]["host_s"] > 0 and rows["official"]["host_s"] > 0
    assert rows["official"]["chunks"] == -(-600 // 192) and rows["parallelcomp"]["chunks"] >= 3
    assert rows["official"]["wall_s"] >= rows["official"]["prefill_s"] + rows["official"]["host_s"]
    assert main(["--tokenizer", str(tiny_checkpoint[0]), "--model", str(tiny_checkpoint[0])]) == 2


def test_mesh_row_on_virtual_devices(smoke_run):
    """--mesh chunks=2 on 2 virtual CPU devices: a parallelcomp-mesh row with the one-device answer and a speed-up
    line."""
    proc, result, _ = smoke_run
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["parallelcomp-mesh"]["status"] == "ok" and rows["parallelcomp-mesh"]["devices"] == 2
    assert rows["parallelcomp-mesh"]["tokens"] == rows["parallelcomp"]["tokens"]
    assert rows["parallelcomp-mesh"]["kept_chunks"] == rows["parallelcomp"]["kept_chunks"]
    assert "mesh chunks=2 (2 devices) at 1024 tokens: prefill" in proc.stdout and "same answer: True" in proc.stdout
    assert main(["--mesh", "chunks=64"]) == 2
