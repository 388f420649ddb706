"""Where a decode step's time goes (issue 12): variants of one single-token step of a random-weight model, timed on
the device inside a jitted loop of dependent steps, against the bytes a step must read.

Variants (each in plain jnp over the library's param tree, so they differ only in structure):
- `weights-scan`: the layers' projections only (no attention), layers in `lax.scan` over the stacked weights (the
  structure `forward` uses through `nn.scan`);
- `weights-unrolled`: the same with a Python loop over layers and static slices of the stacked weights;
- `weights-split`: the same over per-layer weight arrays (separate buffers, nothing sliced);
- `step-<loop>-<attn>`: a whole decode step with a KV cache of `--cache` slots carried through the layer loop and
  written in place; attention as an einsum or as a multiply-reduce that XLA can fuse with the cache read;
- `library`: `pcomp_jax.decoding.decode` as it stands, per step.

`python benchmarks/decode_probe.py --model llama3-8b --cache 23040 --out probe.json`; `--model tiny` on the CPU.
`--trace` also profiles one call of the `library` variant and prints its kernels: device time per step, launches
per step, and the bytes per second each would reach if it read only its weights (for the matmuls of a layer).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from prefill_profile import device_events, kind_of  # benchmarks/ is the script's own directory

from pcomp_jax.bench.shapes import SHAPES, kv_bytes_per_token, weight_bytes
from pcomp_jax.cache import KVCache
from pcomp_jax.decoding import Sampling, decode
from pcomp_jax.layout import to_stored
from pcomp_jax.model import init_params
from pcomp_jax.rope import apply_rope, rope_tables


def rms(x, scale, eps):
    xf = x.astype(jnp.float32)
    return scale * (xf * lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + eps)).astype(x.dtype)


def layer_of(params, i):
    return jax.tree.map(lambda w: w[i], params["layers"])


def matmul(x, w, how="dot"):
    """x [B, D] @ w [D, F]; "reduce" writes it as a multiply-reduce, which XLA fuses with a slice of w."""
    if how == "dot":
        return x @ w
    return jnp.sum(x[:, :, None].astype(jnp.float32) * w[None].astype(jnp.float32), axis=1).astype(x.dtype)


def projections(p, x, c, how="dot"):
    """One layer without attention: q stands in for the attention output. x [B, D]."""
    a, m = p["attn"], p["mlp"]
    mm = lambda x, w: matmul(x, w, how)
    h = rms(x, p["attn_norm"]["scale"], c.rms_norm_eps)
    q = mm(h, a["q_proj"]["kernel"])
    k = mm(h, a["k_proj"]["kernel"])
    v = mm(h, a["v_proj"]["kernel"])
    x = x + mm(q + jnp.pad(k + v, ((0, 0), (0, q.shape[1] - k.shape[1]))), a["o_proj"]["kernel"])
    h = rms(x, p["mlp_norm"]["scale"], c.rms_norm_eps)
    return x + mm(
        jax.nn.silu(mm(h, m["gate_proj"]["kernel"])) * mm(h, m["up_proj"]["kernel"]), m["down_proj"]["kernel"]
    )


def attention_step(p, x, k_all, v_all, valid_all, layer, end, cos, sin, c, attn):
    """One decoder layer for one new token per row, with the cache [L, B, S, K, H] updated in place."""
    b = x.shape[0]
    n, kh, hd = c.num_heads, c.num_kv_heads, c.head_dim
    a, m = p["attn"], p["mlp"]
    h = rms(x, p["attn_norm"]["scale"], c.rms_norm_eps)
    q = (h @ a["q_proj"]["kernel"]).reshape(b, 1, n, hd)
    k = (h @ a["k_proj"]["kernel"]).reshape(b, 1, kh, hd)
    v = (h @ a["v_proj"]["kernel"]).reshape(b, 1, kh, hd)
    q, k = apply_rope(q, cos, sin)[:, 0], apply_rope(k, cos, sin)  # [B, N, H], [B, 1, K, H]
    k_all = lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), (layer, 0, end, 0, 0))
    v_all = lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), (layer, 0, end, 0, 0))
    valid_all = lax.dynamic_update_slice(valid_all, jnp.ones((1, b, 1, kh), bool), (layer, 0, end, 0))
    kc = lax.dynamic_index_in_dim(k_all, layer, 0, keepdims=False)  # [B, S, K, H]
    vc = lax.dynamic_index_in_dim(v_all, layer, 0, keepdims=False)
    ok = lax.dynamic_index_in_dim(valid_all, layer, 0, keepdims=False)  # [B, S, K]
    qg = q.reshape(b, kh, n // kh, hd)  # [B, K, G, H]
    if attn == "einsum":
        logits = jnp.einsum("bkgh,bskh->bkgs", qg, kc, preferred_element_type=jnp.float32)
        ok = ok.transpose(0, 2, 1)[:, :, None, :]  # [B, K, 1, S]
    else:
        logits = jnp.sum(qg[:, None].astype(jnp.float32) * kc[:, :, :, None].astype(jnp.float32), -1)  # [B,S,K,G]
        ok = ok[..., None]
    logits = jnp.where(ok, logits * hd**-0.5, -1e30)
    axis = -1 if attn == "einsum" else 1
    probs = jax.nn.softmax(logits, axis=axis)
    if attn == "einsum":
        out = jnp.einsum("bkgs,bskh->bkgh", probs.astype(vc.dtype), vc, preferred_element_type=jnp.float32)
    else:
        out = jnp.sum(probs[..., None] * vc[:, :, :, None].astype(jnp.float32), 1)  # [B, K, G, H]
    x = x + out.reshape(b, n * hd).astype(x.dtype) @ a["o_proj"]["kernel"]
    h = rms(x, p["mlp_norm"]["scale"], c.rms_norm_eps)
    x = x + (jax.nn.silu(h @ m["gate_proj"]["kernel"]) * (h @ m["up_proj"]["kernel"])) @ m["down_proj"]["kernel"]
    return x, k_all, v_all, valid_all


def make_step(c, loop, attn):
    def step(params, x, k_all, v_all, valid_all, end):
        cos, sin = rope_tables(c, jnp.full((x.shape[0], 1), end))
        if loop == "scan":

            def body(carry, xs):
                x, k_all, v_all, valid_all = carry
                p, layer = xs
                return attention_step(p, x, k_all, v_all, valid_all, layer, end, cos, sin, c, attn), None

            (x, k_all, v_all, valid_all), _ = lax.scan(
                body, (x, k_all, v_all, valid_all), (params["layers"], jnp.arange(c.num_layers))
            )
        else:
            for i in range(c.num_layers):
                lp = params["split"][i] if loop == "split" else layer_of(params, i)
                x, k_all, v_all, valid_all = attention_step(lp, x, k_all, v_all, valid_all, i, end, cos, sin, c, attn)
        h = rms(x, params["final_norm"]["scale"], c.rms_norm_eps)
        head = params["lm_head"]["kernel"] if "lm_head" in params else params["embed"]["embedding"].T
        logits = (h @ head).astype(jnp.float32)
        tok = jnp.argmax(logits, -1)
        return params["embed"]["embedding"][tok], k_all, v_all, valid_all

    return step


HLO_DIR = None  # --hlo-dir: write each variant's optimised HLO there


def copies_in(hlo: str) -> str:
    """How many copy / dynamic-slice / gemm ops the optimised HLO holds (a copy of weights or cache per step shows)."""
    counts = [len(re.findall(p, hlo)) for p in (r"= \S+ copy\(", r"dynamic-slice\(", r"gemm")]
    return "copy {} dynamic-slice {} gemm {}".format(*counts)


def time_loop(fn, params, state, steps, repeats=5, name=""):
    """Median seconds per step of `steps` dependent applications of fn(params, state, i) -> state, inside one jit
    (params an argument: a closure would embed the weights in the program as constants)."""
    run = jax.jit(lambda p, s: lax.fori_loop(0, steps, lambda i, s: fn(p, s, i), s))
    if HLO_DIR:
        hlo = run.lower(params, state).compile().as_text()
        with open(f"{HLO_DIR}/{name}.hlo.txt", "w") as f:
            f.write(hlo)
        print(f"  {name}: {copies_in(hlo)}", flush=True)
    jax.block_until_ready(run(params, state))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(params, state))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / steps


def trace_kernels(run, steps: int, top: int = 30) -> list[dict]:
    """Profile one call of `run` (a decode of `steps` steps) and print its kernels, busiest first: device ms per
    step, launches per step, microseconds per launch and kind."""
    trace_dir = tempfile.mkdtemp()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        jax.block_until_ready(run())
    time_us, launches = collections.Counter(), collections.Counter()
    for name, us in device_events(trace_dir):
        time_us[name] += us
        launches[name] += 1
    total = sum(time_us.values())
    print(f"device busy {total / 1e3 / steps:.3f} ms per step over {steps} steps")
    print("| kernel | kind | ms/step | launches/step | us/launch |\n|---|---|---|---|---|")
    rows = []
    for name, us in time_us.most_common():
        row = {"kernel": name, "kind": kind_of(name), "ms_per_step": us / 1e3 / steps}
        row |= {"launches_per_step": launches[name] / steps, "us_per_launch": us / launches[name]}
        rows.append(row)
        if len(rows) <= top:
            print(
                f"| {name[:80]} | {row['kind']} | {row['ms_per_step']:.4f} | {row['launches_per_step']:.1f} "
                f"| {row['us_per_launch']:.1f} |"
            )
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama3-8b")
    p.add_argument("--cache", type=int, default=23040, help="cache slots (3 kept chunks of 7680)")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--variants", default="all")
    p.add_argument("--out")
    p.add_argument("--hlo-dir")
    p.add_argument("--trace", action="store_true", help="profile one call of the library variant")
    args = p.parse_args()
    global HLO_DIR
    HLO_DIR = args.hlo_dir
    c = SHAPES[args.model]
    dtype = jnp.bfloat16
    runtime = jax.block_until_ready(jax.jit(lambda k: init_params(c, k, dtype))(jax.random.key(0)))
    wanted = None if args.variants == "all" else set(args.variants.split(","))
    # the plain-jnp variants index the stored layout (stacked layers), as the library did before
    params = runtime if wanted == {"library"} else jax.device_put(to_stored(runtime, c))
    b, s = 1, args.cache
    x0 = runtime["embed"]["embedding"][:b] * 1.0
    shape = (c.num_layers, b, s, c.num_kv_heads, c.head_dim)
    keys = jax.random.split(jax.random.key(1), 2)
    k_all = jax.random.normal(keys[0], shape, dtype)
    v_all = jax.random.normal(keys[1], shape, dtype)
    valid_all = jnp.ones(shape[:-1], bool).at[:, :, s - args.steps - 1 :].set(False)
    end0 = s - args.steps - 1
    rows = []

    def record(name, seconds, bytes_read):
        rows.append({"variant": name, "ms_per_step": 1000 * seconds, "bytes": bytes_read})
        print(f"{name:28s} {1000 * seconds:8.3f} ms/step", flush=True)

    w_bytes = weight_bytes(c)
    kv = kv_bytes_per_token(c) * s

    def weights(loop):
        def fn(params, x, i):
            if loop in ("scan", "scan-reduce"):
                how = "reduce" if loop == "scan-reduce" else "dot"
                x, _ = lax.scan(lambda x, lp: (projections(lp, x, c, how), None), x, params["layers"])
            elif loop == "unrolled":
                for j in range(c.num_layers):
                    x = projections(layer_of(params, j), x, c)
            else:
                for lp in params:
                    x = projections(lp, x, c)
            return (x * 1e-3).astype(x.dtype)

        return fn

    for loop in ("scan", "scan-reduce", "unrolled", "split"):
        name = f"weights-{loop}"
        if wanted is None or name in wanted:
            p_in = [layer_of(params, i) for i in range(c.num_layers)] if loop == "split" else params
            record(name, time_loop(weights(loop), p_in, x0, args.steps, name=name), w_bytes)
            del p_in
    for loop in ("scan", "unrolled", "split"):
        for attn in ("einsum", "reduce"):
            name = f"step-{loop}-{attn}"
            if wanted is not None and name not in wanted:
                continue
            step = make_step(c, loop, attn)

            def fn(params, state, i, step=step):
                x, ka, va, ok = state
                return step(params, x, ka, va, ok, end0 + i)

            state = (x0, k_all, v_all, valid_all)
            p_in = params
            if loop == "split":
                p_in = {k: v for k, v in params.items() if k != "layers"}
                p_in["split"] = [layer_of(params, i) for i in range(c.num_layers)]
            record(name, time_loop(fn, p_in, state, args.steps, name=name), w_bytes + kv)
            del p_in
    kernels = None
    if wanted is None or "library" in wanted:
        cache = KVCache.from_stacked(k_all, v_all, valid_all, end0)
        sampling = Sampling(max_new_tokens=args.steps, min_new_tokens=args.steps)
        logits = jnp.zeros((b, c.vocab_size), jnp.float32)
        spares = []  # decode donates its cache: every call gets a copy made before the clock starts

        def run():
            return decode(
                runtime,
                c,
                spares.pop(),
                logits,
                jnp.full((b,), end0, jnp.int32),
                sampling=sampling,
                eos_ids=tuple(c.eos_token_ids),
            )

        def spare():
            spares.append(jax.block_until_ready(jax.tree.map(jnp.copy, cache)))

        spare()
        jax.block_until_ready(run())
        times = []
        for _ in range(5):
            spare()
            start = time.perf_counter()
            jax.block_until_ready(run())
            times.append(time.perf_counter() - start)
        record("library", float(np.median(times)) / args.steps, w_bytes + kv)
        if args.trace:
            spare()
            kernels = trace_kernels(run, args.steps)
    out = {
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "model": args.model,
        "cache": s,
        "rows": rows,
        "kernels": kernels,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
