"""Checkpoint converters into the pcomp-jax format (see `pcomp_jax/checkpoint.py`).

    python -m convert.hf_to_flax SRC --out DIR [--dtype bfloat16|float32]

`convert(src, out, dtype=None)` is the same as a function. SRC is an HF model directory (safetensors or
pytorch_model.bin, single file or sharded), a llama.cpp `.gguf` file, or the word `smollm2`.
"""

from convert.errors import ConversionError

__all__ = ["ConversionError", "convert"]


def __getattr__(name):
    # Imported lazily so that `python -m convert.hf_to_flax` does not import its own module twice (runpy warns).
    if name == "convert":
        from convert.hf_to_flax import convert

        return convert
    raise AttributeError(f"module 'convert' has no attribute {name!r}")
