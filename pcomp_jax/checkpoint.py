"""Our checkpoint format: a directory with Orbax-saved params, our config.json and the tokenizer files.

DIR/config.json      LlamaConfig.to_dict() plus {"format": FORMAT, "dtype": ...}
DIR/params/          Orbax StandardCheckpointer tree in the stored layout (layout.py)
DIR/tokenizer*.json  whatever `tokenizer.save_pretrained` writes (loaded as transformers.AutoTokenizer would)
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
from pcomp_jax.errors import first_line

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
    """Write params (numpy or jax arrays, in the stored or the runtime layout: layout.py), config and tokenizer into a
    new directory `path`; the checkpoint holds the stored layout."""
    import orbax.checkpoint as ocp

    from pcomp_jax.layout import to_stored

    if "layers_0" in params:  # the runtime layout, e.g. `Model.params`
        params = to_stored(params, config)

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
    try:
        d = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{cfg_file} is not valid JSON ({err}); convert the model again") from None
    if not isinstance(d, dict) or d.pop("format", None) != FORMAT:
        raise CheckpointError(
            f"{cfg_file} is not a pcomp-jax config (expected format {FORMAT!r}); is this an HF "
            "model directory? Convert it with `python -m pcomp_jax.convert`"
        )
    dtype = d.pop("dtype", None)
    try:
        return LlamaConfig.from_dict(d), dtype
    except (TypeError, ValueError, KeyError, AttributeError) as err:  # edited, or written by another version
        raise CheckpointError(
            f"{cfg_file} does not match this pcomp-jax version ({err}); convert the model again"
        ) from None


def load_params(path: str | Path, config: LlamaConfig | None = None) -> dict:
    """Params of the checkpoint at `path`, as jax arrays on the default device; with `config`, every array's shape
    is checked against it (a config and params from different models are refused by name)."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    if not (path / "params").is_dir():
        raise CheckpointError(f"{path} has no params/ directory; convert the model again")
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(path / "params")
    except Exception as err:  # Orbax/TensorStore raise many types for damaged files
        raise CheckpointError(
            f"the params in {path / 'params'} cannot be read ({first_line(err)}); convert the model again"
        ) from None
    if config is not None:
        check_params(params, config, path)
    return params


def check_params(params: dict, config: LlamaConfig, path: Path) -> None:
    """Refuse params whose tree or shapes differ from what `config` describes."""
    from pcomp_jax.layout import stored_shapes

    expected = stored_shapes(config)
    is_shape = lambda x: isinstance(x, tuple)
    leaves = jax.tree_util.tree_leaves_with_path(expected, is_leaf=is_shape)
    want = {jax.tree_util.keystr(k): v for k, v in leaves}
    got = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    for name in sorted(want.keys() | got.keys()):
        if want.get(name) != got.get(name):
            raise CheckpointError(
                f"{path}: params{name} has shape {got.get(name, 'missing')} but config.json "
                f"({config.num_layers} layers, hidden {config.hidden_size}) needs {want.get(name, 'none')}; the "
                "config and params come from different models: convert the model again"
            )


GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")  # one class in transformers 5


def _generic_fast_tokenizer(path: Path) -> bool:
    """Whether `path` holds a tokenizer.json whose config names the generic fast tokenizer class."""
    try:
        name = json.loads((path / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        return False
    return (path / "tokenizer.json").is_file() and name in GENERIC_TOKENIZER_CLASSES


def load_tokenizer(path: str | Path):
    path = Path(path)
    # the files a tokenizer is built from (tokenizer_config.json alone is not one)
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise CheckpointError(f"{path} has no tokenizer files (tokenizer.json); convert the model again")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if _generic_fast_tokenizer(path):  # the class AutoTokenizer would pick, without its torch import (~1.7 s)
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(str(path))
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path))
    except Exception as err:  # transformers raises several types for broken tokenizer files
        raise CheckpointError(
            f"the tokenizer in {path} cannot be loaded ({first_line(err)}); convert the model again"
        ) from None
