"""Read HF `*.safetensors` weight files (one file or shards) tensor by tensor, as numpy, without torch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ml_dtypes  # noqa: F401  registers numpy's "bfloat16" name, which safetensors' numpy backend needs for BF16
import numpy as np
from safetensors import SafetensorError, safe_open

from pcomp_jax.convert.errors import ConversionError


class SafetensorsReader:
    """Tensors of `files` in file order; names and shapes come from the headers, before any data is read."""

    def __init__(self, files: list[Path]):
        self.files = files

    def _open(self, file: Path):
        try:
            return safe_open(str(file), framework="numpy")
        except (SafetensorError, OSError) as err:
            raise ConversionError(f"{file}: not a readable safetensors file ({err})") from None

    def specs(self) -> dict[str, tuple[int, ...]]:
        """{name: shape} over all files; a name stored twice is an error."""
        specs, where = {}, {}
        for file in self.files:
            with self._open(file) as f:
                for name in f.keys():
                    if name in specs:
                        raise ConversionError(f"tensor {name} is stored twice: in {where[name]} and {file.name}")
                    specs[name] = tuple(f.get_slice(name).get_shape())
                    where[name] = file.name
        return specs

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """(name, array) one at a time, in the stored dtype (float32, float16 or ml_dtypes.bfloat16)."""
        for file in self.files:
            with self._open(file) as f:
                for name in f.keys():
                    try:
                        yield name, f.get_tensor(name)
                    except (SafetensorError, TypeError) as err:  # e.g. an FP8 dtype numpy cannot hold
                        raise ConversionError(f"{file.name}: cannot read tensor {name} as numpy ({err})") from None
