"""GPU checks for the model: cuDNN vs reference attention (values and prefill speed) on random weights.

    python benchmarks/gpu_check.py [--out results.json]

Shapes: SmolLM2-135M (9 q / 3 kv heads, hd 64) and a 2-layer Llama-3-8B slice (32 q / 8 kv heads, hd 128), bf16,
one sequence of T tokens through the fresh causal prefill. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from pcomp_jax.bench.shapes import SHAPES as NAMED
from pcomp_jax.model import forward, init_params

SHAPES = {  # the benchmark's named shapes (pcomp_jax/bench/shapes.py); two layers of the 8B one are enough here
    "smollm2-135m": NAMED["smollm2"],
    "llama3-8b-2layers": dataclasses.replace(NAMED["llama3-8b"], num_layers=2),
}


def _logits(params, tokens, *, config, backend):
    t = tokens.shape[1]
    out, _ = forward(
        params, config, tokens, jnp.arange(t)[None], logits_at=jnp.arange(t - 64, t)[None], attention_backend=backend
    )
    return out.logits


def timed(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", default="2048,8192")
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args()
    rows = []
    for name, config in SHAPES.items():
        params = init_params(config, jax.random.key(0), jnp.bfloat16)
        for t in (int(x) for x in args.lengths.split(",")):
            tokens = jax.random.randint(jax.random.key(1), (1, t), 0, config.vocab_size)
            outs = {}
            for backend in ("reference", "cudnn"):
                fn = jax.jit(functools.partial(_logits, config=config, backend=backend))
                outs[backend] = (np.asarray(fn(params, tokens), np.float32), timed(fn, params, tokens))
            ref, cud = outs["reference"][0], outs["cudnn"][0]
            rel = float(np.linalg.norm(cud - ref) / np.linalg.norm(ref))
            agree = float((cud.argmax(-1) == ref.argmax(-1)).mean())
            rows.append(
                {
                    "shape": name,
                    "tokens": t,
                    "reference_s": outs["reference"][1],
                    "cudnn_s": outs["cudnn"][1],
                    "rel_diff": rel,
                    "argmax_agree": agree,
                    "nan": bool(np.isnan(cud).any()),
                }
            )
            print(rows[-1], flush=True)
    meta = {
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"\n{'shape':<20}{'T':>7}{'reference s':>13}{'cudnn s':>10}{'rel diff':>10}{'argmax':>8}")
    for r in rows:
        print(
            f"{r['shape']:<20}{r['tokens']:>7}{r['reference_s']:>13.4f}{r['cudnn_s']:>10.4f}{r['rel_diff']:>10.2e}"
            f"{r['argmax_agree']:>8.2f}"
        )
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
