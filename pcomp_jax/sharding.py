"""Device meshes (`jax.sharding`) with two axes: `chunks` and `model`.

- `chunks`: ParallelComp's chunks are independent until selection, so chunk groups spread over it. Each shard
  prefills its rows of every group and keeps its own top-k buffer; the shards' buffers are merged once, after the
  last group (chunk eviction keeps the lowest (score, later index), a total order, so the per-shard top-k followed by
  one global top-k keeps exactly what one device keeps).
- `model`: tensor-parallel weights, for models that do not fit one device. Every runtime weight has logical axis
  names (`PARAM_AXES`), and one table (`RULES`) maps logical axes to mesh axes: attention heads (grouped by KV head),
  the MLP's hidden units and the vocabulary are split over `model`; everything else is replicated. XLA's SPMD
  partitioner then splits the jitted forward (the Megatron pattern: a sum over `model` after the attention output
  and after the MLP), and the KV caches follow the heads. A `model` axis must divide the KV heads and the MLP width
  (one-line error otherwise); a vocabulary it does not divide stays replicated.

A mesh is named by `chunks=N,model=M` (either may be omitted; `parse_mesh`), over the first N*M devices of the
process (with `jax.distributed`, of every process). Changing the parallelism is editing `RULES`, not the model.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pcomp_jax.errors import InputError

AXES = ("chunks", "model")

# logical axes of every runtime param (pcomp_jax/layout.py), by the last keys of its path
PARAM_AXES: dict[tuple[str, ...], tuple[str | None, ...]] = {
    ("embed", "embedding"): ("vocab", "embed"),  # [V, D]
    ("qkv_proj", "kernel"): ("embed", "kv_heads", None, "head_dim"),  # [D, K, G + 2, H]
    ("qkv_proj", "bias"): ("kv_heads", None, "head_dim"),  # [K, G + 2, H]
    ("o_proj", "kernel"): ("heads", "embed"),  # [N*H, D]: heads in KV-head order, so "heads" splits like "kv_heads"
    ("o_proj", "bias"): ("embed",),
    ("gate_up_proj", "kernel"): ("embed", None, "mlp"),  # [D, 2, F]
    ("down_proj", "kernel"): ("mlp", "embed"),  # [F, D]
    ("lm_head", "kernel"): ("embed", "vocab"),  # [D, V]
    ("scale",): ("embed",),  # every RMSNorm
}
# logical axis -> mesh axis (absent: replicated)
RULES: dict[str, str] = {"kv_heads": "model", "heads": "model", "mlp": "model", "vocab": "model"}


def init_distributed(coordinator: str, num_processes: int, process_id: int) -> None:
    """Join a multi-process run (`jax.distributed.initialize`): after it, `jax.devices()` lists every process's
    devices and a mesh spans them; each process runs the same program on the same inputs. On CPUs the collectives
    go through gloo. Call it before anything else touches JAX's devices."""
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise InputError(f"process id {process_id} is not in [0, {num_processes})")
    if jax.config.jax_platforms in ("cpu",) or os.environ.get("JAX_PLATFORMS") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def parse_mesh(spec: str | None) -> Mesh | None:
    """`"chunks=4"`, `"model=2"` or `"chunks=2,model=2"` -> a Mesh over the first N*M devices (None for None or a
    1-device mesh)."""
    if spec is None:
        return None
    sizes = dict.fromkeys(AXES, 1)
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, _, value = part.partition("=")
        if name not in AXES or not value.isdigit() or int(value) < 1:
            raise InputError(f"bad mesh {spec!r}: give axis=size pairs such as chunks=4, model=2 or chunks=2,model=2")
        sizes[name] = int(value)
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


def model_shards(mesh: Mesh | None) -> int:
    """How many devices share each weight (the `model` axis; 1 without a mesh)."""
    return 1 if mesh is None or "model" not in mesh.shape else mesh.shape["model"]


def check_model_axis(config, mesh: Mesh | None) -> None:
    """One-line error when the mesh's `model` axis does not divide what it splits (KV heads, MLP width)."""
    m = model_shards(mesh)
    if m == 1:
        return
    for what, n in (("KV heads", config.num_kv_heads), ("MLP width", config.intermediate_size)):
        if n % m:
            raise InputError(
                f"a model axis of {m} does not divide this model's {n} {what}; use a model axis that divides "
                f"{config.num_kv_heads} (its KV heads), or chunks=N with the weights replicated"
            )


def param_axes(path: tuple[str, ...]) -> tuple[str | None, ...]:
    """The logical axes of the runtime param at `path` (its keys in the params tree)."""
    for n in (2, 1):
        if tuple(path[-n:]) in PARAM_AXES:
            return PARAM_AXES[tuple(path[-n:])]
    raise KeyError(f"no logical axes for param {'/'.join(path)}")


def spec(axes: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """The PartitionSpec of an array with these logical axes under `RULES`; a dimension that the mesh axis does not
    divide is replicated (only the vocabulary may be: `check_model_axis` refuses the others)."""
    out = []
    for name, size in zip(axes, shape, strict=True):
        target = RULES.get(name) if name else None
        out.append(target if target in mesh.shape and size % mesh.shape[target] == 0 else None)
    return PartitionSpec(*out)


def place_param(x: np.ndarray, path: tuple[str, ...], mesh: Mesh | None):
    """A runtime param onto the default device, or onto `mesh` by its logical axes."""
    if mesh is None:
        return jax.device_put(x)
    return jax.device_put(x, NamedSharding(mesh, spec(param_axes(path), x.shape, mesh)))


def shard_params(params, mesh: Mesh | None):
    """A runtime params tree placed on `mesh` by `RULES` (unchanged without a mesh)."""
    if mesh is None:
        return params
    place = lambda p, x: place_param(x, tuple(str(getattr(k, "key", k)) for k in p), mesh)
    return jax.tree_util.tree_map_with_path(place, params)


def replicate(tree, mesh: Mesh | None):
    """`tree` on every device of `mesh` (unchanged without a mesh)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
