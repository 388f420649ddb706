"""Read HF `pytorch_model*.bin` weight files (pickled state dicts) tensor by tensor. Needs torch, imported lazily."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import ml_dtypes
import numpy as np

from pcomp_jax.convert.errors import ConversionError

TORCH_HINT = "install the torch extra: pip install 'pcomp-jax[torch]'"


def _torch():
    try:
        import torch
    except ImportError:
        raise ConversionError(f"reading pytorch_model*.bin weights needs PyTorch; {TORCH_HINT}") from None
    return torch


def _to_numpy(t) -> np.ndarray:
    torch = _torch()
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits as ml_dtypes' one
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


class TorchBinReader:
    """Tensors of `files` in file order. Each file is memory-mapped (torch.load(mmap=True)), one at a time."""

    def __init__(self, files: list[Path]):
        self.files = files
        _torch()  # fail before any work if torch is missing

    def _load(self, file: Path) -> dict:
        torch = _torch()
        try:
            try:
                sd = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                sd = torch.load(file, map_location="cpu", weights_only=True)  # legacy (pre-zip) format
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
            raise ConversionError(f"{file}: not a readable PyTorch checkpoint ({err})") from None
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise ConversionError(f"{file}: expected a flat state dict of tensors")
        return sd

    def specs(self) -> dict[str, tuple[int, ...]]:
        specs, where = {}, {}
        for file in self.files:
            for name, t in self._load(file).items():
                if name in specs:
                    raise ConversionError(f"tensor {name} is stored twice: in {where[name]} and {file.name}")
                specs[name] = tuple(t.shape)
                where[name] = file.name
        return specs

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        for file in self.files:
            sd = self._load(file)
            for name in list(sd):
                yield name, _to_numpy(sd.pop(name))
            del sd
