"""Issue 12: is the bf16 matmul rate that bounds our prefill XLA's, or the card's?

Times, on one card, in one call: PyTorch (cuBLAS) and JAX (XLA) on the same products, both as a short burst (a few
products after a warm-up) and sustained for about as long as a 128K prefill (~3 s of back-to-back products, where
the card's power limit may lower its clocks). Shapes: the bench's 8192^3 ceiling product and the Llama-3-8B
layer's four products at a 4-chunk group of 7808 rows (fused q/k/v, o, fused gate/up, down). Each JAX variant runs
in its own process under its own XLA_FLAGS (an unknown flag aborts XLA, so a variant can fail alone). nvidia-smi's
SM clock and power are read after each sustained run.

    python benchmarks/matmul_probe.py --out matmul_probe.json [--jax-flags 'NAME=FLAGS' ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROWS = 4 * 7808  # one group of four full 7,680-token chunks at their ladder length
SHAPES = {  # name: (m, k, n)
    "8192^3": (8192, 8192, 8192),
    "qkv": (ROWS, 4096, 6144),
    "o": (ROWS, 4096, 4096),
    "gate_up": (ROWS, 4096, 28672),
    "down": (ROWS, 14336, 4096),
}
DEFAULT_VARIANTS = {
    "xla-default": "",
    "xla-no-triton-gemm": "--xla_gpu_enable_triton_gemm=false",
    "xla-cublaslt": "--xla_gpu_enable_cublaslt=true",
}


def smi() -> str:
    try:
        q = "clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu"
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"nvidia-smi failed: {e}"


def torch_seconds(a, b, count: int) -> float:
    """Seconds per product over `count` back-to-back products, timed with CUDA events."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(count):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / count


def jax_seconds(a, b, steps: int) -> float:
    """Seconds per product over `steps` products in one jitted loop (compiled and run once before timing)."""
    import jax
    from jax import lax

    # each product's first element is written into the next one's input: the products stay dependent, so XLA can
    # neither hoist one out of the loop nor drop one, at the cost of a one-element update
    def body(i, x):
        y = x @ b  # [m, n]
        return x.at[0, 0].set(y[0, 0])

    f = jax.jit(lambda x: lax.fori_loop(0, steps, body, x))
    f(a).block_until_ready()
    start = time.perf_counter()
    f(a).block_until_ready()
    return (time.perf_counter() - start) / steps


def measure(kind: str, burst: int, sustain_s: float) -> dict:
    """Burst and sustained TFLOP/s of every shape, through torch or jax."""
    if kind == "torch":
        import torch

        out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

        def operands(m, k, n):
            return (
                torch.randn(m, k, device="cuda", dtype=torch.bfloat16),
                (torch.randn(k, n, device="cuda") / k**0.5).to(torch.bfloat16),
            )

        def seconds(a, b, count):
            return torch_seconds(a, b, count)
    else:
        import jax
        import jax.numpy as jnp

        out = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS")}

        def operands(m, k, n):
            ka, kb = jax.random.split(jax.random.key(0))
            a = jax.random.normal(ka, (m, k), jnp.bfloat16)
            return a, (jax.random.normal(kb, (k, n), jnp.float32) / k**0.5).astype(jnp.bfloat16)

        def seconds(a, b, count):
            return jax_seconds(a, b, count)

    for name, (m, k, n) in SHAPES.items():
        a, b = operands(m, k, n)
        flops = 2 * m * k * n
        seconds(a, b, 3)  # warm-up
        t_burst = seconds(a, b, burst)
        t_sus = seconds(a, b, max(burst, int(sustain_s / t_burst)))
        out[name] = {"burst_tflops": flops / t_burst / 1e12, "sustained_tflops": flops / t_sus / 1e12, "smi": smi()}
        del a, b
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="matmul_probe.json")
    p.add_argument("--burst", type=int, default=10, help="products in a burst (after 3 warm-up products)")
    p.add_argument("--sustain-s", type=float, default=3.0, help="seconds of back-to-back products, sustained")
    p.add_argument("--jax-flags", action="append", default=[], help="NAME=XLA_FLAGS, a JAX variant (repeatable)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--worker", choices=("torch", "jax"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(measure(args.worker, args.burst, args.sustain_s)))
        return

    variants = dict(DEFAULT_VARIANTS)
    variants.update(dict(v.split("=", 1) for v in args.jax_flags))
    runs = ([("torch", "torch", "")] if not args.no_torch else []) + [("jax", k, v) for k, v in variants.items()]
    results = {"idle_smi": smi()}
    for worker, label, flags in runs:
        env = dict(os.environ, XLA_FLAGS=flags) if worker == "jax" else dict(os.environ)
        cmd = [sys.executable, __file__, "--worker", worker, "--burst", str(args.burst)]
        cmd += ["--sustain-s", str(args.sustain_s)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            results[label] = {"error": (proc.stderr or proc.stdout).strip().splitlines()[-3:]}
            print(f"{label}: failed: {results[label]['error']}", flush=True)
            continue
        results[label] = json.loads(lines[-1][len("RESULT ") :])
        print(f"{label}: done", flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)

    print(f"\nTFLOP/s, burst / sustained (~{args.sustain_s:.0f} s); {results.get('torch', {}).get('device', '')}")
    print("| variant | " + " | ".join(SHAPES) + " |")
    print("|---|" + "---|" * len(SHAPES))
    for label, r in results.items():
        if label == "idle_smi" or "error" in r:
            continue
        cells = [f"{r[s]['burst_tflops']:.0f} / {r[s]['sustained_tflops']:.0f}" for s in SHAPES]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for label, r in results.items():
        if label != "idle_smi" and "error" not in r:
            print(f"{label} after sustained gate_up: {r['gate_up']['smi']}")


if __name__ == "__main__":
    main()
