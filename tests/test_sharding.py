"""Chunk groups spread over a `chunks` mesh give what one device gives: the same kept chunks, tokens and cache, and
chunk scores to float rounding, for every mesh size up to 4 virtual CPU devices (sizes that do not divide a group
pad it with empty rows), with and without token eviction. Bad mesh specs are one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pcomp_jax.errors import InputError
from pcomp_jax.sharding import parse_mesh

HERE = Path(__file__).parent


def test_meshes_equal_one_device():
    """chunks=2..4, model=4 and chunks=2,model=2 on 4 virtual CPU devices (tiny model, 8 query / 4 KV heads, float32):
    one device's kept chunks, tokens and cache, chunk scores within 1e-4, with and without token eviction; a plain
    forward's logits within 1e-4 relative under each model axis, split the Megatron way (one all-reduce after the
    attention and one after the MLP of every layer, one for the vocabulary-split embedding; no weight gathered);
    a batch of documents on the mixed mesh answers as on one device."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(HERE / "sharded_check.py")], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    runs = [r for r in rows if "config" in r]
    assert {r["mesh"] for r in runs} == {None, "chunks=2", "chunks=3", "chunks=4", "model=4", "chunks=2,model=2"}
    for name in ("plain", "evict"):
        one = next(r for r in runs if r["config"] == name and r["mesh"] is None)
        assert one["num_chunks"] >= 5  # several groups of 3, the last one short
        for r in runs:
            if r["config"] == name and r["mesh"] is not None:
                assert r["tokens"] == one["tokens"] and r["kept_chunks"] == one["kept_chunks"], (name, r["mesh"])
                assert r["cache_tokens_per_layer"] == one["cache_tokens_per_layer"]
                np.testing.assert_allclose(r["chunk_scores"], one["chunk_scores"], atol=1e-4)
    logits = [r for r in rows if "logits" in r]
    assert {r["logits"] for r in logits} == {"model=2", "model=4", "chunks=2,model=2"}
    for r in logits:
        assert r["rel"] < 1e-4 and r["qkv_spec"] == "P(None, 'model', None, None)", r
        assert r["collectives"] == {"all-reduce": 2 * 2 + 1, "all-gather": 0, "all-to-all": 0}, r
    batches = {r["batch"]: r["rows"] for r in rows if "batch" in r}
    assert batches["chunks=2,model=2"] == batches[None] and len(batches[None]) == 2


@pytest.mark.parametrize(
    "spec, message",
    [
        ("chunks=0", "bad mesh"),
        ("rows=2", "bad mesh"),
        ("chunks=two", "bad mesh"),
        ("chunks=64", "needs 64 devices"),
    ],
)
def test_bad_mesh_specs(spec, message):
    with pytest.raises(InputError, match=message):
        parse_mesh(spec)
    assert parse_mesh(None) is None and parse_mesh("chunks=1") is None


def test_a_model_axis_must_divide_the_kv_heads():
    from pcomp_jax.bench.shapes import SHAPES
    from pcomp_jax.sharding import check_model_axis

    class Mesh2:  # check_model_axis reads only the axis sizes
        shape = {"chunks": 1, "model": 2}

    with pytest.raises(InputError, match="model axis of 2 does not divide this model's 3 KV heads"):
        check_model_axis(SHAPES["smollm2"], Mesh2())
    check_model_axis(SHAPES["llama3-8b"], Mesh2())  # 8 KV heads, 14336 MLP units: fine


def test_every_runtime_param_has_logical_axes():
    import jax

    from pcomp_jax.bench.shapes import SHAPES
    from pcomp_jax.model import init_params
    from pcomp_jax.sharding import param_axes

    for name in ("smollm2", "llama3-8b", "tiny"):
        shapes = jax.eval_shape(lambda name=name: init_params(SHAPES[name], jax.random.key(0)))
        for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
            axes = param_axes(tuple(str(k.key) for k in path))
            assert len(axes) == leaf.ndim, (name, path)


def test_two_processes_answer_as_one(tiny_checkpoint, tmp_path):
    """The CLI in 2 processes on localhost (jax.distributed, gloo CPU collectives), one CPU device each, a chunks
    mesh spanning both: process 0 prints the answer one process gives without a mesh; process 1 prints nothing."""
    import socket

    ckpt, _ = tiny_checkpoint
    words = "alpha beta gamma delta river stone cloud paper garden silver window orange market".split()
    (tmp_path / "doc.txt").write_text(" ".join(np.random.default_rng(3).choice(words, 300)))
    argv = [sys.executable, "-m", "pcomp_jax", "generate", "--ckpt", str(ckpt), "--context-file"]
    argv += [str(tmp_path / "doc.txt"), "--question", "what is the key?", "--chunk-tokens", "160", "--keep-chunks", "2"]
    argv += ["--max-new-tokens", "6", "--json"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(HERE.parent))
    env.pop("XLA_FLAGS", None)
    one = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hosts = ["--mesh", "chunks=2", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id"]
    procs = [
        subprocess.Popen([*argv, *hosts, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][1][-2000:] + outs[1][1][-2000:]
    answers = [[line for line in out.splitlines() if line.startswith("{")] for out, _ in outs]  # gloo logs aside
    got, want = json.loads(answers[0][-1]), json.loads(one.stdout)
    assert got["tokens"] == want["tokens"] and got["stats"]["kept_chunks"] == want["stats"]["kept_chunks"]
    np.testing.assert_allclose(got["stats"]["chunk_scores"], want["stats"]["chunk_scores"], atol=1e-4)
    assert answers[1] == []
