"""Checkpoint converters into the pcomp-jax format (see `pcomp_jax/checkpoint.py`).

    python -m pcomp_jax.convert SRC --out DIR [--dtype bfloat16|float32]   # or: pcomp-jax-convert SRC --out DIR

`convert(src, out, dtype=None)` is the same as a function. SRC is an HF model directory (safetensors or
pytorch_model.bin, single file or sharded), a llama.cpp `.gguf` file, or the word `smollm2`.
"""

from pcomp_jax.convert.errors import ConversionError

__all__ = ["ConversionError", "convert"]


def __getattr__(name):
    # Imported lazily so that running `pcomp_jax.convert.hf_to_flax` as a script does not import it twice.
    if name == "convert":
        from pcomp_jax.convert.hf_to_flax import convert

        return convert
    raise AttributeError(f"module 'pcomp_jax.convert' has no attribute {name!r}")
