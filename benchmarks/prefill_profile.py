"""Where a ParallelComp prefill spends its device time (issue 12): a `jax.profiler` trace of one warm call, summed
by kernel and by kind (matmul, attention, fusion, copy, ...), printed as a table and written as JSON.

`python benchmarks/prefill_profile.py --model llama3-8b --length 131072 --out profile.json` (random bf16 weights,
the canonical chunk settings); `--model tiny --length 4096 --chunk-tokens 512` runs on the CPU.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import tempfile
import time

import jax
import numpy as np

from pcomp_jax.bench.shapes import SHAPES
from pcomp_jax.decoding import Sampling
from pcomp_jax.model import init_params
from pcomp_jax.parallelcomp.config import ParallelCompConfig
from pcomp_jax.parallelcomp.pipeline import generate_from_ids
from pcomp_jax.pretrained import Model

KINDS = (  # first match wins, on the lower-cased kernel name
    ("attention", ("cudnn", "flash", "fmha", "sdpa", "attention")),
    ("matmul", ("gemm", "cublas", "cutlass", "nvjet", "matmul", "dot", "sm90_xmma", "triton_gemm")),
    ("copy", ("copy", "memcpy", "memset", "transpose")),
    ("reduce", ("reduce", "sort", "topk", "argmax")),
    ("fusion", ("fusion", "loop_", "input_")),
)


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, words in KINDS:
        if any(w in low for w in words):
            return kind
    return "other"


def device_events(trace_dir: str):
    """(name, microseconds) of every event on a device stream of the perfetto trace in trace_dir."""
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))
    path = path or sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))
    if not path:
        raise SystemExit(f"no trace written under {trace_dir}")
    with gzip.open(path[-1]) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    device_pids = {pid for pid, n in names.items() if "GPU" in n or "/device:" in n}
    if not device_pids:
        print("no device streams in the trace; processes:", sorted(set(names.values())))
    for e in events:
        if e.get("ph") == "X" and e.get("pid") in device_pids and "dur" in e:
            yield e["name"], float(e["dur"])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama3-8b")
    p.add_argument("--length", type=int, default=131072)
    p.add_argument("--chunk-tokens", type=int, default=7680)
    p.add_argument("--keep-chunks", type=int, default=3)
    p.add_argument("--chunk-batch", type=int, default=None)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out")
    args = p.parse_args()
    c = SHAPES[args.model]
    params = jax.block_until_ready(jax.jit(lambda k: init_params(c, k, jax.numpy.bfloat16))(jax.random.key(0)))
    model = Model(params=params, config=c, tokenizer=None)
    rng = np.random.default_rng(0)
    context = rng.integers(10, c.vocab_size, args.length).tolist()
    question = rng.integers(10, c.vocab_size, 20).tolist()
    knobs = {} if args.chunk_batch is None else {"chunk_batch": args.chunk_batch}
    config = ParallelCompConfig(
        chunk_tokens=args.chunk_tokens,
        keep_chunks=args.keep_chunks,
        chat=False,
        sampling=Sampling(max_new_tokens=16, min_new_tokens=16),
        **knobs,
    )
    run = lambda: generate_from_ids(model, context, question, config, progress=False)
    run()  # compile
    start = time.perf_counter()
    stats = run().stats
    untraced = time.perf_counter() - start
    trace_dir = tempfile.mkdtemp()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        run()
    by_name, by_kind = collections.Counter(), collections.Counter()
    for name, us in device_events(trace_dir):
        by_name[name] += us
        by_kind[kind_of(name)] += us
    total = sum(by_kind.values())
    print(
        f"{jax.devices()[0].device_kind}: {args.model}, {args.length} tokens, prefill {stats['prefill_seconds']} s, "
        f"decode {stats['decode_seconds']} s, wall {untraced:.3f} s, device busy {total / 1e6:.3f} s (traced)"
    )
    print("| kind | device s | share |\n|---|---|---|")
    for kind, us in by_kind.most_common():
        print(f"| {kind} | {us / 1e6:.3f} | {100 * us / max(total, 1):.1f}% |")
    print("| kernel | kind | device s | share |\n|---|---|---|---|")
    for name, us in by_name.most_common(args.top):
        print(f"| {name[:90]} | {kind_of(name)} | {us / 1e6:.4f} | {100 * us / max(total, 1):.1f}% |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {
                    "device": jax.devices()[0].device_kind,
                    "jax": jax.__version__,
                    "args": vars(args),
                    "stats": stats,
                    "wall_s": untraced,
                    "by_kind_us": dict(by_kind),
                    "by_name_us": dict(by_name.most_common(200)),
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
