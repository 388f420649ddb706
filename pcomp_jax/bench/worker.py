"""One measurement in its own process: `python -m pcomp_jax.bench.worker SPEC_JSON` prints `BENCH_RESULT {...}`.

A process per (method, length) gives each its own peak memory and keeps JAX's and PyTorch's allocators off one
card at the same time. Every method runs its whole workload twice; the second run is timed, and the first run's
extra wall time is reported as compile seconds.

Methods: `ceilings` (bf16 matmul rate and copy bandwidth of this device), `parallelcomp` (ours), `dense` (our
`forward` over the whole input, cuDNN on a GPU), `hf` and `official` (PyTorch peers, `peers.py`).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from pcomp_jax.bench.workload import inputs, text_of_length, tokenizer

RESULT = "BENCH_RESULT "


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm up (and compile)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def ceilings(spec: dict) -> dict:
    """bf16 matmul FLOP/s and elementwise read+write bandwidth of this device, measured here and now.

    Each is timed over `steps` dependent operations inside one jitted loop, so host dispatch is amortised; the
    matrix is scaled by 1/sqrt(n) so repeated products stay in range."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    n, size, steps = (512, 1 << 20, 4) if spec["smoke"] else (8192, 1 << 29, 20)  # size: bf16 elements (1 GiB)
    keys = jax.random.split(jax.random.key(1), 2)
    a = jax.random.normal(keys[0], (n, n), jnp.bfloat16)
    b = (jax.random.normal(keys[1], (n, n), jnp.float32) / n**0.5).astype(jnp.bfloat16)
    matmuls = jax.jit(lambda a, b: lax.fori_loop(0, steps, lambda i, x: x @ b, a))
    t_mm = _median_seconds(lambda: matmuls(a, b).block_until_ready(), 5) / steps
    x = jax.random.normal(keys[0], (size,), jnp.bfloat16)
    scales = jax.jit(lambda x: lax.fori_loop(0, steps, lambda i, y: y * -1, x))  # a read and a write per step
    t_copy = _median_seconds(lambda: scales(x).block_until_ready(), 5) / steps
    memory = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
    return {
        "matmul_flops_per_s": 2 * n**3 / t_mm,
        "copy_bytes_per_s": 2 * size * 2 / t_copy,
        "matmul_n": n,
        "device_bytes": memory,
    }


def device_peak_bytes(devices: int = 1) -> int | None:
    """The allocator's peak, the largest over the first `devices` devices (None where it keeps no statistics)."""
    import jax

    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.devices()[:devices]]
    return None if None in peaks else max(peaks)


def _model(spec: dict, mesh=None):
    """(Model, LlamaConfig): a converted checkpoint, or random bf16 weights of a named shape made on the device (with
    the tokenizer of spec["tokenizer"], if given); on `mesh`, each weight made or loaded in its shards."""
    import jax

    from pcomp_jax.bench.shapes import SHAPES, random_params
    from pcomp_jax.pretrained import Model, load
    from pcomp_jax.sharding import check_model_axis

    dtype = spec["dtype"]
    if spec["model"] in SHAPES:
        config = SHAPES[spec["model"]]
        check_model_axis(config, mesh)
        params = jax.block_until_ready(random_params(config, 0, dtype, mesh=mesh))
        return Model(params=params, config=config, tokenizer=tokenizer(spec), mesh=mesh), config
    model = load(spec["model"], dtype=dtype, mesh=mesh)
    return model, model.config


def ours(spec: dict) -> dict:
    """ParallelComp through the public API: text with the checkpoint's tokenizer, token ids for random shapes; for
    method `parallelcomp-mesh` over the devices of spec["mesh"] (weights split over its model axis, if any)."""

    from pcomp_jax.decoding import Sampling
    from pcomp_jax.parallelcomp.config import ParallelCompConfig
    from pcomp_jax.parallelcomp.pipeline import generate, generate_from_ids
    from pcomp_jax.sharding import parse_mesh

    mesh = parse_mesh(spec["mesh"]) if spec["method"] == "parallelcomp-mesh" else None
    model, c = _model(spec, mesh)
    devices = 1 if mesh is None else mesh.size
    new = spec["new_tokens"]
    config = ParallelCompConfig(
        chunk_tokens=spec["chunk_tokens"],
        keep_chunks=spec["keep_chunks"],
        chunk_batch=spec["chunk_batch"],
        chat=False,
        sampling=Sampling(max_new_tokens=new, min_new_tokens=new),  # exactly `new` tokens, even on random weights
    )
    # the whole input once to compile every group shape it uses (they depend on the chunk lengths and the group
    # sizes), then timed
    if model.tokenizer is None:
        context, question = inputs(spec, c.vocab_size)
        run = lambda: generate_from_ids(model, context, question, config, progress=False)
    else:
        text, question = text_of_length(model.tokenizer, spec["length"]), spec["question_text"]
        run = lambda: generate(model, text, question, config, progress=False)
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    start = time.perf_counter()
    result = run()
    wall = time.perf_counter() - start
    compile_s = max(0.0, first - wall)
    s = result.stats
    chunks = s["num_chunks"]
    q_len = s["question_tokens"]
    merged = max(s["cache_tokens_per_layer"])
    return {
        "prefill_s": s["prefill_seconds"],
        "host_s": s["host_seconds"],
        "first_token_s": s["first_token_seconds"],
        "decode_s": s["decode_seconds"],
        "new_tokens": len(result.tokens),
        "tokens": result.tokens,
        "wall_s": wall,
        "compile_s": compile_s,
        "chunks": chunks,
        "chunk_batch_used": s["chunk_batch"],
        "prefill_rows": s["prefill_rows"],
        "kept_chunks": s["kept_chunks"],
        "chunk_lengths": [s["head_tokens"] + n + q_len for n in s["chunk_tokens"]],
        "logit_rows": chunks * q_len,
        "question_tokens": q_len,
        "cache_tokens": merged,
        "peak_bytes": device_peak_bytes(devices),
        "devices": devices,
    }


def dense(spec: dict) -> dict:
    """Our `forward` over BOS + context + question in one pass (cuDNN on a GPU), then greedy decoding."""
    import jax
    import jax.numpy as jnp

    from pcomp_jax.attention import resolve_backend
    from pcomp_jax.decoding import Sampling, decode, prefill

    model, c = _model(spec)
    context, question = inputs(spec, c.vocab_size)
    ids = [c.bos_token_id, *context, *question]
    new = spec["new_tokens"]
    sampling = Sampling(max_new_tokens=new, min_new_tokens=new)
    backend = resolve_backend("auto")
    tokens = jnp.asarray([ids], jnp.int32)

    def run():
        start = time.perf_counter()
        logits, cache = prefill(model.params, c, tokens, jnp.int32(len(ids)), extra=new, attention_backend=backend)
        jax.block_until_ready(logits)
        mid = time.perf_counter()
        out, _ = decode(
            model.params,
            c,
            cache,
            logits,
            jnp.full((1,), len(ids), jnp.int32),
            sampling=sampling,
            eos_ids=tuple(c.eos_token_ids),
            attention_backend=backend,
        )
        jax.block_until_ready(out)
        return mid - start, time.perf_counter() - mid

    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    start = time.perf_counter()
    prefill_s, decode_s = run()
    wall = time.perf_counter() - start
    return {
        "prefill_s": prefill_s,
        "first_token_s": prefill_s,
        "decode_s": decode_s,
        "new_tokens": new,
        "wall_s": wall,
        "compile_s": max(0.0, first - wall),
        "chunk_lengths": [len(ids)],
        "logit_rows": 1,
        "cache_tokens": len(ids),
        "peak_bytes": device_peak_bytes(),
    }


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv or sys.argv[1:])[0])
    method = spec["method"]
    if method == "ceilings":
        result = ceilings(spec)
    elif method in ("parallelcomp", "parallelcomp-mesh"):
        result = ours(spec)
    elif method == "dense":
        result = dense(spec)
    else:
        from pcomp_jax.bench import peers

        result = peers.run(spec)
    import jax

    result.update(device=jax.devices()[0].device_kind, jax=jax.__version__)
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
