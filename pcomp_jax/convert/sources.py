"""What the converter can read, behind one interface, and `open_source` to pick one from the user's SRC argument.

A source has `description`, `hf_config` (an HF config.json dict), `default_dtype`, `specs()` ({HF tensor name:
shape}, cheap: headers only), `tensors()` ((HF name, numpy array in HF layout), one at a time) and `tokenizer()`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import ml_dtypes
import numpy as np

from pcomp_jax.convert.errors import ConversionError
from pcomp_jax.convert.gguf_source import GGUFSource, smollm2_path

# HF config dtype -> our default param dtype. float16 becomes bfloat16: same memory, and no float16 overflow in
# activations (HF models trained in bf16 are often published as fp16).
_DEFAULT_DTYPE = {"bfloat16": ml_dtypes.bfloat16, "float16": ml_dtypes.bfloat16, "float32": np.float32}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


class Source(Protocol):
    description: str
    hf_config: dict[str, Any]
    default_dtype: np.dtype

    def specs(self) -> dict[str, tuple[int, ...]]: ...

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]: ...

    def tokenizer(self) -> Any: ...


def _index_files(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError) as err:
        raise ConversionError(f"{index}: not a valid shard index ({err!r})") from None
    files = [index.parent / f for f in sorted(set(weight_map.values()))]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise ConversionError(f"{index} lists shards that are not in {index.parent}: {', '.join(absent)}")
    return files


class HFDirSource:
    """An HF model directory: config.json, safetensors or pytorch_model.bin weights (sharded or not), tokenizer."""

    def __init__(self, path: Path):
        self.path = path
        self.description = f"HF model directory {path}"
        cfg = path / "config.json"
        if not cfg.is_file():
            raise ConversionError(f"{path} is not an HF model directory (no config.json)")
        try:
            self.hf_config = json.loads(cfg.read_text())
        except ValueError as err:
            raise ConversionError(f"{cfg}: not valid JSON ({err})") from None
        torch_dtype = self.hf_config.get("dtype") or self.hf_config.get("torch_dtype")
        self.default_dtype = np.dtype(_DEFAULT_DTYPE.get(torch_dtype, np.float32))
        self._reader = None

    @property
    def reader(self):
        """The weight-file reader, chosen on first use (after the config has been validated)."""
        if self._reader is None:
            self._reader = self._find_weights()
        return self._reader

    def _find_weights(self):
        from pcomp_jax.convert.safetensors_source import SafetensorsReader

        p = self.path
        if (p / "model.safetensors.index.json").is_file():
            return SafetensorsReader(_index_files(p / "model.safetensors.index.json"))
        if (p / "model.safetensors").is_file():
            return SafetensorsReader([p / "model.safetensors"])
        if (p / "pytorch_model.bin.index.json").is_file() or (p / "pytorch_model.bin").is_file():
            from pcomp_jax.convert.torch_source import TorchBinReader

            index = p / "pytorch_model.bin.index.json"
            return TorchBinReader(_index_files(index) if index.is_file() else [p / "pytorch_model.bin"])
        raise ConversionError(
            f"no weights in {p}: expected model.safetensors, model-*-of-*.safetensors with "
            "model.safetensors.index.json, pytorch_model.bin, or pytorch_model-*.bin with pytorch_model.bin.index.json"
        )

    def specs(self) -> dict[str, tuple[int, ...]]:
        return self.reader.specs()

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        return self.reader.tensors()

    def tokenizer(self):
        from transformers import AutoTokenizer

        if not any((self.path / f).is_file() for f in _TOKENIZER_FILES):
            raise ConversionError(
                f"no tokenizer in {self.path} (none of {', '.join(_TOKENIZER_FILES)}); save the "
                "tokenizer next to the model (tokenizer.save_pretrained)"
            )
        try:
            return AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        except (ValueError, OSError, KeyError) as err:
            raise ConversionError(f"could not load the tokenizer from {self.path}: {err}") from None


def open_source(src: str | Path) -> Source:
    """The source named by `src`: an existing directory or `.gguf` file, else the word `smollm2`."""
    path = Path(src).expanduser()
    if path.is_dir():
        return HFDirSource(path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConversionError(f"{path}: expected an HF model directory or a .gguf file")
        return GGUFSource(path)
    if str(src) == "smollm2":
        return GGUFSource(smollm2_path())
    raise ConversionError(
        f"{src}: no such file or directory (expected an HF model directory, a .gguf file, or the word 'smollm2')"
    )
