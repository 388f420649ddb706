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


def test_chunks_meshes_equal_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(HERE / "sharded_check.py")], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert {r["mesh"] for r in rows} == {None, "chunks=2", "chunks=3", "chunks=4"}
    for name in ("plain", "evict"):
        one = next(r for r in rows if r["config"] == name and r["mesh"] is None)
        assert one["num_chunks"] >= 5  # several groups of 3, the last one short
        for r in rows:
            if r["config"] == name and r["mesh"] is not None:
                assert r["tokens"] == one["tokens"] and r["kept_chunks"] == one["kept_chunks"], (name, r["mesh"])
                assert r["cache_tokens_per_layer"] == one["cache_tokens_per_layer"]
                np.testing.assert_allclose(r["chunk_scores"], one["chunk_scores"], atol=1e-4)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("chunks=0", "bad mesh"),
        ("rows=2", "bad mesh"),
        ("chunks=two", "bad mesh"),
        ("chunks=1,model=2", "not implemented yet"),
        ("chunks=64", "needs 64 devices"),
    ],
)
def test_bad_mesh_specs(spec, message):
    with pytest.raises(InputError, match=message):
        parse_mesh(spec)
    assert parse_mesh(None) is None and parse_mesh("chunks=1") is None
