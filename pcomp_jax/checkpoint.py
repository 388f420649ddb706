"""Our checkpoint format: a directory with Orbax-saved params, our config.json and the tokenizer files.

DIR/config.json      LlamaConfig.to_dict() plus {"format": FORMAT, "dtype": ...}
DIR/params/          Orbax StandardCheckpointer tree (see model.py for the layout)
DIR/tokenizer*.json  whatever `tokenizer.save_pretrained` writes (loaded with transformers.AutoTokenizer)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from pcomp_jax.config import LlamaConfig

FORMAT = "pcomp-jax/1"


class CheckpointError(ValueError):
    """A directory that is not a readable pcomp-jax checkpoint."""


@contextlib.contextmanager
def _save_numpy_without_copy():
    """Orbax deep-copies every numpy leaf before its async save (NumpyHandler's default): one more full copy of the
    params at peak. Ours are not touched until save_checkpoint has waited for the save, so save them in place."""
    import orbax.checkpoint as ocp

    handlers = ocp.type_handlers
    try:
        no_copy = handlers.NumpyHandler(deepcopy_host_arrays=False)
    except TypeError:  # an orbax without the option: save as usual
        yield
        return
    default = handlers.get_type_handler(np.ndarray)
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # registering warns "overriding np.ndarray" each time
    handlers.register_type_handler(np.ndarray, no_copy, override=True)
    try:
        yield
    finally:
        handlers.register_type_handler(np.ndarray, default, override=True)
        absl_log.setLevel(level)


def save_checkpoint(path: str | Path, params: dict, config: LlamaConfig, tokenizer: Any) -> Path:
    """Write params (numpy or jax arrays), config and tokenizer into a new directory `path`."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    if (path / "params").exists():
        raise CheckpointError(f"{path} already holds a checkpoint; choose another --out or delete it first")
    dtype = str(np.dtype(jax.tree.leaves(params)[0].dtype))
    # at most ~1 GB in flight, and no defensive copy: peak memory stays near params + the largest array
    handler = ocp.StandardCheckpointHandler(save_concurrent_gb=1)
    with _save_numpy_without_copy(), ocp.Checkpointer(handler) as ckptr:
        ckptr.save(path / "params", args=ocp.args.StandardSave(params))
    config_dict = {"format": FORMAT, "dtype": dtype, **config.to_dict()}
    (path / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
    tokenizer.save_pretrained(str(path))
    return path


def read_config(path: str | Path) -> tuple[LlamaConfig, str]:
    """(config, dtype name) of the checkpoint at `path`."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(
            f"{path} is not a pcomp-jax checkpoint (no config.json); convert one with `python -m pcomp_jax.convert`"
        )
    d = json.loads(cfg_file.read_text())
    if d.pop("format", None) != FORMAT:
        raise CheckpointError(
            f"{cfg_file} is not a pcomp-jax config (expected format {FORMAT!r}); is this an HF "
            "model directory? Convert it with `python -m pcomp_jax.convert`"
        )
    dtype = d.pop("dtype", None)
    try:
        return LlamaConfig.from_dict(d), dtype
    except TypeError as err:  # written by another version of pcomp-jax
        raise CheckpointError(
            f"{cfg_file} does not match this pcomp-jax version ({err}); convert the model again"
        ) from None


def load_params(path: str | Path) -> dict:
    """Params of the checkpoint at `path`, as jax arrays on the default device."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    if not (path / "params").is_dir():
        raise CheckpointError(f"{path} has no params/ directory")
    logging.getLogger("absl").setLevel(logging.WARNING)
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(path / "params")


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(str(path))
