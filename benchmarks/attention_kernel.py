"""Chunk attention with importance scores: our Pallas kernel against cuDNN and XLA, checked and timed.

    python benchmarks/attention_kernel.py [--out attention_kernel.json]        # GPU: the two shapes in SHAPES
    python benchmarks/attention_kernel.py --small --interpret                  # CPU: tiny shapes, interpret mode

Rows, for each shape (bf16, causal, every chunk full length, observation rows = the last --window rows):
  (a) pallas+scores   ours: output, LSE and scores [C, K, T] (every configuration in BLOCKS; "fused": the scores
                      inside the attention launch instead of a second launch)
  (b) cudnn           jax.nn.dot_product_attention(implementation="cudnn"): output only
  (c) cudnn+xla       (b) plus the scores in a separate XLA pass (attention.observation_scores)
  (d) xla+xla         implementation="xla" plus the same score pass, where it fits in memory
  (e) cudnn+pallas    (b) plus the scores from our Pallas score kernel alone (kernels.triton.chunk_scores)
Then: the compiled kernel on ragged edge cases against the dense reference (EDGE_CASES), and the whole prefill of a
chunk group through the model with each backend.
TFLOP/s counts causal FLOPs, 2 * C * N * T^2 * H (half of dense 4 * T^2 * H). Before timing, every variant is
checked: ours against (d) or, where (d) does not fit, against cuDNN for the output and the XLA pass for the scores.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from pcomp_jax import attention
from pcomp_jax.attention import scores_of_rows
from pcomp_jax.heads import group_scores
from pcomp_jax.kernels.contract import reference
from pcomp_jax.kernels.triton import Blocks, chunk_attention, chunk_scores
from pcomp_jax.model import forward, init_params

try:
    from gpu_check import SHAPES as MODELS  # run as a script: benchmarks/ is on the path
except ImportError:
    from benchmarks.gpu_check import SHAPES as MODELS

SHAPES = {  # name: (C, T, N, K, H)
    "llama3-8b": (16, 8192, 32, 8, 128),
    "smollm2": (8, 8192, 9, 3, 64),
}
SMALL = {"tiny-gqa4": (2, 256, 8, 2, 128), "tiny-gqa3": (2, 192, 9, 3, 64)}
BLOCKS = {  # head_dim: candidate configurations; the first (the default) is also timed without scores
    128: [
        Blocks(128, 128, 8, 3),
        Blocks(128, 128, 8, 3, fused_scores=True),
        Blocks(128, 128, 8, 3, heavy_first=False),
        Blocks(128, 64, 8, 2),
        Blocks(128, 64, 8, 3),
        Blocks(128, 64, 8, 3, fast_exp2=False),
        Blocks(128, 64, 8, 3, prescale_q=True),
    ],
    64: [
        Blocks(64, 64, 4, 4),
        Blocks(64, 64, 4, 4, fused_scores=True),
        Blocks(64, 64, 4, 4, heavy_first=False),
        Blocks(64, 64, 4, 3),
        Blocks(128, 64, 8, 3),
        Blocks(64, 64, 4, 4, fast_exp2=False),
        Blocks(64, 64, 4, 4, prescale_q=True),
    ],
}
MODEL_CHUNKS = 4  # chunks per vmapped prefill in the model-level check


def describe(b: Blocks) -> str:
    flags = ("" if b.fast_exp2 else " exactexp") + (" prescale" if b.prescale_q else "")
    flags += (" fused" if b.fused_scores else "") + ("" if b.heavy_first else " lightfirst")
    return f"bq{b.block_q} bk{b.block_k} w{b.num_warps} s{b.num_stages}{flags}"


def xla_scores(q, k, lengths, obs_rows):
    """The separate score pass: softmax of the observation rows over their chunk, summed per KV head."""
    t = q.shape[1]
    valid = jnp.broadcast_to((jnp.arange(t)[None, :] < lengths[:, None])[:, :, None], k.shape[:3])
    return group_scores(scores_of_rows(q, obs_rows, k, valid, jnp.arange(t)), k.shape[2])  # [C, K, T]


def make_variants(lengths, obs_rows, interpret):
    def ours(blocks, scores=True):
        rows = obs_rows if scores else None
        return jax.jit(lambda q, k, v: chunk_attention(q, k, v, lengths, rows, blocks=blocks, interpret=interpret))

    def dense(implementation, scores):
        """jax.nn.dot_product_attention; scores: False, "xla" (jnp pass) or "pallas" (our score kernel)."""

        def run(q, k, v):
            out = jax.nn.dot_product_attention(
                q,
                k,
                v,
                is_causal=True,
                query_seq_lengths=lengths,
                key_value_seq_lengths=lengths,
                implementation=implementation,
            )
            if scores == "pallas":
                return out, chunk_scores(q, k, lengths, obs_rows, interpret=interpret)
            return (out, xla_scores(q, k, lengths, obs_rows)) if scores else (out,)

        return jax.jit(run)

    return ours, dense


def timed(fn, args, repeats):
    """Median seconds of one call over `repeats` calls (after a warm-up call); inputs rotate among `args` sets."""
    jax.block_until_ready(fn(*args[0]))
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args[i % len(args)]))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def spread(values) -> float:
    """(max - min) / median of the per-round times."""
    return (max(values) - min(values)) / float(np.median(values))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.isnan(a).any():
        return float("nan")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def bench_shape(name, shape, args, dtype):
    c, t, n, kh, h = shape
    keys = jax.random.split(jax.random.key(hash(name) % 2**31), 3 * args.input_sets)
    sets = []
    for i in range(args.input_sets):
        q = jax.random.normal(keys[3 * i], (c, t, n, h), dtype)
        k = jax.random.normal(keys[3 * i + 1], (c, t, kh, h), dtype)
        v = jax.random.normal(keys[3 * i + 2], (c, t, kh, h), dtype)
        sets.append((q, k, v))
    lengths = jnp.full((c,), t, jnp.int32)
    obs_rows = jnp.broadcast_to(t - args.window + jnp.arange(args.window), (c, args.window)).astype(jnp.int32)
    ours, dense = make_variants(lengths, obs_rows, args.interpret)
    flops = 2 * c * n * t * t * h
    rows = []

    def record(label, fn, extra=None):
        """Compile and warm up now; time later, in interleaved rounds."""
        try:
            jax.block_until_ready(fn(*sets[0]))
        except Exception as e:  # noqa: BLE001 (an OOM or a compile failure is a result here)
            rows.append({"shape": name, "variant": label, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            return
        rows.append({"shape": name, "variant": label, "fn": fn, **(extra or {})})

    # correctness first, on the first input set
    q, k, v = sets[0]
    truth = None
    if not args.skip_xla:
        try:
            truth = jax.jit(lambda q, k, v: reference(q, k, v, lengths, obs_rows))(q, k, v)
            truth = jax.tree.map(np.asarray, truth)
        except Exception as e:  # noqa: BLE001
            print(f"{name}: dense reference does not fit ({type(e).__name__})")
    cudnn_out = None
    if not args.interpret:
        cudnn_out = np.asarray(dense("cudnn", False)(q, k, v)[0])
    score_ref = np.asarray(jax.jit(xla_scores)(q, k, lengths, obs_rows)) if truth is None else truth.scores
    out_ref = truth.out if truth is not None else cudnn_out

    for i, blocks in enumerate(BLOCKS[h][: args.max_configs]):
        label = "pallas+scores " + describe(blocks)
        try:
            got = chunk_attention(q, k, v, lengths, obs_rows, blocks=blocks, interpret=args.interpret, poison=True)
            checks = {"err_scores": rel(got.scores, score_ref)}
            if out_ref is not None:  # none with --skip-xla off the GPU
                checks["err_out"] = rel(got.out, out_ref)
            if truth is not None:
                checks["err_lse"] = rel(got.lse, truth.lse)
            if cudnn_out is not None:
                checks["err_out_vs_cudnn"] = rel(got.out, cudnn_out)
        except Exception as e:  # noqa: BLE001
            rows.append({"shape": name, "variant": label, "error": f"{type(e).__name__}: {str(e)[:300]}"})
            continue
        record(label, ours(blocks), checks)
        if i == 0:
            record("pallas, no scores " + describe(blocks), ours(blocks, scores=False))
    if not args.interpret:
        record("(b) cudnn", dense("cudnn", False))
        got = dense("cudnn", "xla")(q, k, v)
        record("(c) cudnn+xla scores", dense("cudnn", "xla"), {"err_scores": rel(got[1], score_ref)})
        got = dense("cudnn", "pallas")(q, k, v)
        record("(e) cudnn+pallas scores", dense("cudnn", "pallas"), {"err_scores": rel(got[1], score_ref)})
    if not args.skip_xla:
        record("(d) xla+xla scores", dense("xla", "xla"))
    timed_rows = [r for r in rows if "fn" in r]
    for _ in range(args.rounds):  # every variant once per round, so slow drifts of the machine hit all alike
        for r in timed_rows:
            r.setdefault("ms_rounds", []).append(timed(r["fn"], sets, args.repeats) * 1e3)
    for r in timed_rows:
        del r["fn"]
        r["ms"] = float(np.median(r["ms_rounds"]))
        r["tflops"] = flops / r["ms"] / 1e9
    return rows


EDGE_CASES = [  # (dtype, (C, T, N, K, H), blocks): ragged lengths, T off the block grid, odd observation rows
    (jnp.bfloat16, (3, 1000, 8, 2, 128), Blocks()),
    (jnp.float16, (3, 1000, 8, 2, 128), Blocks(fused_scores=True)),
    (jnp.bfloat16, (4, 777, 9, 3, 64), None),
    (jnp.float16, (4, 777, 9, 3, 64), Blocks(64, 64, 4, 4, fused_scores=True, heavy_first=False)),
]


def edge_checks(interpret: bool) -> list[dict]:
    """The compiled kernel on the cases the CPU tests run interpreted: lengths 0, 1, odd and full, T not a multiple
    of the blocks, observation rows with repeats, -1, padding rows and rows past T; every output poisoned first.
    Compared with the dense jnp reference; padding rows must be exactly 0 (out) and -inf (lse)."""
    results = []
    for i, (dtype, (c, t, n, kh, h), blocks) in enumerate(EDGE_CASES):
        keys = jax.random.split(jax.random.key(100 + i), 4)
        q = jax.random.normal(keys[0], (c, t, n, h), dtype)
        k = jax.random.normal(keys[1], (c, t, kh, h), dtype)
        v = jax.random.normal(keys[2], (c, t, kh, h), dtype)
        lengths = jnp.asarray([t, 1, 0, t // 3 + 5][:c], jnp.int32)
        obs = jax.random.randint(keys[3], (c, 24), -1, t)
        obs = obs.at[:, :3].set(jnp.asarray([t - 1, t - 1, t + 5]))  # a repeat and a row past T
        got = chunk_attention(q, k, v, lengths, obs, blocks=blocks, interpret=interpret, poison=True)
        want = jax.jit(reference)(q, k, v, lengths, jnp.where(obs < t, obs, -1))
        pad = np.arange(t)[None, :] >= np.asarray(lengths)[:, None]
        out, lse = np.asarray(got.out, np.float32), np.asarray(got.lse)
        results.append(
            {
                "case": f"{jnp.dtype(dtype).name} C{c} T{t} N{n} K{kh} H{h} "
                + (describe(blocks) if blocks else "default"),
                "err_out": rel(got.out, want.out),
                "err_lse": rel(np.where(pad[:, None], 0, lse), np.where(pad[:, None], 0, want.lse)),
                "err_scores": rel(got.scores, want.scores),
                "padding_exact": bool((out[pad] == 0).all() and np.isneginf(lse.transpose(0, 2, 1)[pad]).all()),
                "nan": bool(np.isnan(out).any() or np.isnan(np.asarray(got.scores)).any()),
            }
        )
    return results


def _group_prefill(params, tokens, *, config, backend, window):
    """jax.vmap of `forward` over chunks, logits and observation scores at the last `window` rows (as the pipeline)."""
    t = tokens.shape[1]
    rows = jnp.arange(t - window, t)[None]

    def one(tok):
        out, _ = forward(
            params, config, tok[None], jnp.arange(t)[None], logits_at=rows, score_rows=rows, attention_backend=backend
        )
        return out.logits[0], out.scores[:, 0]

    return jax.vmap(one)(tokens)


MODEL_VARIANTS = {  # label: (attention_backend, whether our score kernel may run beside cuDNN)
    "cudnn + jnp scores": ("cudnn", False),
    "cudnn + pallas scores": ("cudnn", True),
    "pallas": ("pallas", True),
}


def model_check(window: int, repeats: int, rounds: int) -> list[dict]:
    """The whole prefill of a chunk group as the pipeline runs it, random bf16 weights (the shapes of gpu_check.py),
    for each of MODEL_VARIANTS, timed in interleaved rounds; differences are against the first variant."""
    rows = []
    t = 8192
    for name, config in MODELS.items():
        params = init_params(config, jax.random.key(0), jnp.bfloat16)
        tokens = jax.random.randint(jax.random.key(1), (MODEL_CHUNKS, t), 0, config.vocab_size)
        group, first, scorers = [], None, attention.SCORE_KERNELS
        for label, (backend, beside) in MODEL_VARIANTS.items():
            attention.SCORE_KERNELS = scorers if beside else scorers[1:]  # read at trace time: this first call
            fn = jax.jit(functools.partial(_group_prefill, config=config, backend=backend, window=window))
            outs = [np.asarray(x, np.float32) for x in fn(params, tokens)]
            row = {"model": name, "backend": label, "chunks": MODEL_CHUNKS, "tokens": t, "fn": fn}
            if first is None:
                first = outs
            else:
                row["rel_diff_logits"] = rel(outs[0], first[0])
                row["rel_diff_scores"] = rel(outs[1], first[1])
                row["argmax_agree"] = float((outs[0].argmax(-1) == first[0].argmax(-1)).mean())
            group.append(row)
        attention.SCORE_KERNELS = scorers
        for _ in range(rounds):
            for row in group:
                row.setdefault("ms_rounds", []).append(timed(row["fn"], [(params, tokens)], repeats) * 1e3)
        for row in group:
            del row["fn"]
            row["ms"] = float(np.median(row["ms_rounds"]))
        rows += group
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="attention_kernel.json", help="JSON results file")
    parser.add_argument("--small", action="store_true", help="tiny shapes (for a CPU smoke run)")
    parser.add_argument("--interpret", action="store_true", help="run the kernel in the Pallas interpreter")
    parser.add_argument("--window", type=int, default=32, help="observation rows per chunk (default 32)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per variant and round (median)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median of the round medians)")
    parser.add_argument("--input-sets", type=int, default=2, help="input sets rotated between calls")
    parser.add_argument("--skip-xla", action="store_true", help="skip the dense XLA variant and reference")
    parser.add_argument("--shapes", default=None, help="comma-separated subset of the shape names")
    parser.add_argument("--max-configs", type=int, default=None, help="only the first N kernel configurations")
    parser.add_argument("--edge-checks-only", action="store_true", help="only the ragged correctness cases")
    args = parser.parse_args()
    shapes = SMALL if args.small else SHAPES
    if args.shapes:
        shapes = {k: shapes[k] for k in args.shapes.split(",")}
    dtype = jnp.bfloat16
    rows = []
    if args.edge_checks_only:
        shapes = {}
    for name, shape in shapes.items():
        rows += bench_shape(name, shape, args, dtype)
    edges = edge_checks(args.interpret) if not args.small else []
    timing = not (args.interpret or args.small or args.edge_checks_only)
    models = model_check(args.window, args.repeats, args.rounds) if timing else []
    by_shape = {}
    for row in rows:
        by_shape.setdefault(row["shape"], []).append(row)
    summary = {}
    for name, shape_rows in by_shape.items():
        ok = [r for r in shape_rows if "ms" in r]
        ours = [r for r in ok if r["variant"].startswith("pallas+scores")]
        ref = {r["variant"][:3]: r for r in ok}
        if ours and "(b)" in ref:
            best = min(ours, key=lambda r: r["ms"])
            summary[name] = {
                "best_pallas": best["variant"],
                "ratio_vs_cudnn": ref["(b)"]["ms"] / best["ms"],
                "ratio_vs_cudnn_plus_xla": ref["(c)"]["ms"] / best["ms"] if "(c)" in ref else None,
            }
    result = {
        "command": "python benchmarks/attention_kernel.py "
        + " ".join(
            f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if v not in (None, False) and k != "out"
        ),
        "date": datetime.date.today().isoformat(),
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "host": platform.node(),
        "dtype": "bfloat16",
        "window": args.window,
        "shapes": {k: dict(zip(("C", "T", "N", "K", "H"), v, strict=True)) for k, v in shapes.items()},
        "rows": rows,
        "summary": summary,
        "model_prefill": models,
        "edge_checks": edges,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{'shape':<10} {'variant':<48} {'ms':>9} {'spread':>7} {'TFLOP/s':>8} {'err_out':>9} {'err_scores':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['shape']:<10} {r['variant']:<48} {r['error'][:120]}")
            continue
        eo, es = r.get("err_out"), r.get("err_scores")
        print(
            f"{r['shape']:<10} {r['variant']:<48} {r['ms']:9.3f} {spread(r['ms_rounds']):7.1%} {r['tflops']:8.1f} "
            f"{'' if eo is None else f'{eo:9.1e}'} {'' if es is None else f'{es:10.1e}'}"
        )
    for e in edges:
        print(
            f"edge check {e['case']:<62} out {e['err_out']:.1e} lse {e['err_lse']:.1e} scores {e['err_scores']:.1e} "
            f"padding exact {e['padding_exact']} nan {e['nan']}"
        )
    for m in models:
        extra = ", ".join(f"{k} {m[k]:.2e}" for k in ("rel_diff_logits", "rel_diff_scores") if k in m)
        print(
            f"model prefill {m['model']:<18} {m['backend']:<22} {m['chunks']}x{m['tokens']}: {m['ms']:8.2f} ms "
            f"(spread {spread(m['ms_rounds']):.1%}) {extra}"
        )
    for name, s in summary.items():
        c_plus = s["ratio_vs_cudnn_plus_xla"]
        print(
            f"{name}: best {s['best_pallas']}: {s['ratio_vs_cudnn']:.3f}x cudnn, "
            f"{'n/a' if c_plus is None else f'{c_plus:.3f}'}x cudnn+xla scores"
        )


if __name__ == "__main__":
    main()
