"""Device meshes (`jax.sharding`): ParallelComp's chunks are independent until selection, so chunk groups spread
over a `chunks` mesh axis. Each shard prefills its rows of every group and keeps its own top-k buffer; the shards'
buffers are merged once, after the last group (chunk eviction keeps the lowest (score, later index), a total order,
so the per-shard top-k followed by one global top-k keeps exactly what one device keeps). Weights are replicated.

A mesh is named by `chunks=N[,model=M]` (`parse_mesh`); the `model` axis (tensor-parallel weights) is reserved and
refused above 1 until it is implemented.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pcomp_jax.errors import InputError

AXES = ("chunks", "model")


def parse_mesh(spec: str | None) -> Mesh | None:
    """`"chunks=4"` or `"chunks=2,model=1"` -> a Mesh over the first N devices (None for None or a 1-device mesh)."""
    if spec is None:
        return None
    sizes = dict.fromkeys(AXES, 1)
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, _, value = part.partition("=")
        if name not in AXES or not value.isdigit() or int(value) < 1:
            raise InputError(f"bad mesh {spec!r}: give axis=size pairs such as chunks=4 or chunks=2,model=1")
        sizes[name] = int(value)
    if sizes["model"] > 1:
        raise InputError("tensor parallel weights (a model axis above 1) are not implemented yet; use chunks=N")
    devices = jax.devices()
    need = sizes["chunks"] * sizes["model"]
    if need > len(devices):
        raise InputError(f"mesh {spec!r} needs {need} devices; this process sees {len(devices)}")
    if need == 1:
        return None
    return Mesh(np.asarray(devices[:need]).reshape(sizes["chunks"], sizes["model"]), AXES)


def chunk_shards(mesh: Mesh | None) -> int:
    """How many shards the chunk axis of a group is split into (1 without a mesh)."""
    return 1 if mesh is None else mesh.shape["chunks"]


def replicate(tree, mesh: Mesh | None):
    """`tree` on every device of `mesh` (unchanged without a mesh)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
