"""The Pallas chunk-attention kernel (interpret mode on CPU) against an independent float64 numpy reference.

Every kernel call uses `poison=True`, so an output element the kernel never writes stays NaN and fails the checks.
Shapes stay tiny (T <= 150, at most 4 query heads) because the Pallas interpreter is slow; most of its cost is
XLA:CPU compiling the interpreted kernel, so `run_kernel` compiles at XLA's lowest optimisation level (about half the
time, same results within float32 rounding).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcomp_jax.attention import last_rows
from pcomp_jax.kernels.contract import reference
from pcomp_jax.kernels.triton import Blocks, chunk_attention


@functools.partial(
    jax.jit, static_argnames=("per_query_head", "blocks"), compiler_options={"xla_backend_optimization_level": 0}
)
def run_kernel(q, k, v, lengths, obs_rows=None, *, per_query_head=False, blocks=None):
    """`chunk_attention` through the Pallas interpreter with every output poisoned (NaN) before the kernel runs."""
    return chunk_attention(
        q, k, v, lengths, obs_rows, per_query_head=per_query_head, blocks=blocks, interpret=True, poison=True
    )


jit_reference = jax.jit(reference, static_argnames="per_query_head")  # one compile instead of many eager ops


def numpy_attention(q, k, v, lengths, obs_rows=None, per_query_head=False):
    """float64 causal GQA attention over right-padded chunks: (out [C,T,N,H], lse [C,N,T], scores or None).

    Query row r of chunk c sees keys j <= r with j < lengths[c]; query head n reads KV head n // (N // K). Padding
    rows (r >= length) give out 0 and lse -inf, but still have a softmax over their visible keys, which is what an
    observation row in the padding contributes to the scores. scores [C, K, T] ([C, N, T] per query head) sums each
    observation row's probabilities (negative rows ignored, repeats counted again) over the rows and the group.
    """
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    lengths = np.asarray(lengths)
    c, t, n, h = q.shape
    kh = k.shape[2]
    group = n // kh
    out = np.zeros_like(q)
    lse = np.full((c, n, t), -np.inf)
    probs = np.zeros((c, n, t, t))
    pos = np.arange(t)
    for b in range(c):
        visible = (pos[None, :] <= pos[:, None]) & (pos[None, :] < lengths[b])  # [row, key]
        seen = visible.any(axis=1)
        valid = pos < lengths[b]
        for head in range(n):
            kv = head // group
            logits = np.where(visible, q[b, :, head] @ k[b, :, kv].T * h**-0.5, -np.inf)
            m = np.where(seen, logits.max(axis=1), 0.0)
            e = np.exp(logits - m[:, None])
            z = e.sum(axis=1)
            probs[b, head] = e / np.where(seen, z, 1.0)[:, None]
            lse[b, head, valid] = m[valid] + np.log(z[valid])
            out[b, valid, head] = (probs[b, head] @ v[b, :, kv])[valid]
    if obs_rows is None:
        return out, lse, None
    scores = np.zeros((c, n, t))
    for b in range(c):
        for r in np.asarray(obs_rows)[b]:
            if r >= 0:
                scores[b] += probs[b, :, r]
    if not per_query_head:
        scores = scores.reshape(c, kh, group, t).sum(axis=2)
    return out, lse, scores


def make_inputs(seed, c, t, n, kh, h, dtype=jnp.float32):
    """Random q [C,T,N,H], k, v [C,T,K,H] in `dtype` (q scaled up a little so the softmax is not flat)."""
    rs = np.random.RandomState(seed)
    q = 1.5 * rs.standard_normal((c, t, n, h))
    k, v = (rs.standard_normal((c, t, kh, h)) for _ in range(2))
    return tuple(jnp.asarray(x, dtype) for x in (q, k, v))


def rel_err(got, want):
    """||got - want|| / ||want|| over the entries where `want` is finite (in float64)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    finite = np.isfinite(want)
    got, want = np.where(finite, got, 0.0), np.where(finite, want, 0.0)
    return np.linalg.norm(got - want) / np.linalg.norm(want)


def check(got, want, lengths, tol_out, tol_rest):
    """Kernel outputs vs the numpy reference: no NaN, exact zeros / -inf on padding, relative errors within tol."""
    out, lse, scores = (None if x is None else np.asarray(x, np.float64) for x in got)
    t = out.shape[1]
    padding = np.arange(t)[None, :] >= np.asarray(lengths)[:, None]  # [C, T]
    assert not np.isnan(out).any() and not np.isnan(lse).any()
    assert (out[padding] == 0).all()
    np.testing.assert_array_equal(np.isneginf(lse), np.broadcast_to(padding[:, None, :], lse.shape))
    assert rel_err(out, want[0]) < tol_out
    assert rel_err(lse, want[1]) < tol_rest
    if want[2] is None:
        assert scores is None
        return
    assert not np.isnan(scores).any()
    assert (scores.transpose(0, 2, 1)[padding] == 0).all()  # keys past the length get nothing
    assert rel_err(scores, want[2]) < tol_rest


# name: (seed, (C, T, N, K, H), blocks, lengths, obs_rows)
CASES = {
    "one-chunk-whole-blocks": (1, (1, 64, 2, 2, 64), Blocks(32, 16), [64], [[63, 62, 10, 0]]),
    # T=100 padded to 128; a length-1 chunk; obs rows with -1, repeats and rows in the padding (60 >= 37, 10 >= 1)
    "gqa3-ragged": (
        2,
        (3, 100, 3, 1, 64),
        Blocks(32, 16),
        [100, 37, 1],
        [[99, 98, 98, -1, 50], [36, 36, -1, 60, 5], [0, -1, 0, 10, -1]],
    ),
    # W=20 random observation rows, -1 included (the kernel pads them to 32); T=150 padded to 192
    "gqa4-hd128-many-rows": (3, (2, 150, 4, 1, 128), Blocks(64, 32), [150, 64], None),
    # block_q < block_k, an empty chunk, a single observation row
    "gqa2-hd128-empty-chunk": (4, (3, 96, 4, 2, 128), Blocks(16, 32), [0, 96, 33], [[-1], [95], [32]]),
    # the scores inside the attention launch (the first program of each chunk and head) instead of a second launch
    "gqa3-ragged-fused": (
        5,
        (3, 100, 3, 1, 64),
        Blocks(32, 16, fused_scores=True),
        [100, 37, 1],
        [[99, 98, 98, -1, 50], [36, 36, -1, 60, 5], [0, -1, 0, 10, -1]],
    ),
    "gqa4-hd128-fused": (6, (2, 150, 4, 1, 128), Blocks(64, 32, fused_scores=True), [150, 64], None),
}


def case_inputs(name):
    """q, k, v (float32), lengths, obs_rows, blocks of CASES[name]."""
    seed, shape, blocks, lengths, obs = CASES[name]
    q, k, v = make_inputs(seed, *shape)
    if obs is None:
        obs = np.random.RandomState(seed + 100).randint(-1, shape[1], size=(shape[0], 20))
    return q, k, v, jnp.asarray(lengths, jnp.int32), jnp.asarray(obs, jnp.int32), blocks


@pytest.mark.parametrize("name", CASES)
def test_kernel_matches_numpy_float32(name):
    """float32: out, lse and grouped scores within 1e-4 of float64, padding exact, nothing left unwritten."""
    q, k, v, lengths, obs, blocks = case_inputs(name)
    got = run_kernel(q, k, v, lengths, obs, blocks=blocks)
    assert got.out.dtype == jnp.float32 and got.out.shape == q.shape
    assert got.lse.shape == (q.shape[0], q.shape[2], q.shape[1])
    assert got.scores.shape == (q.shape[0], k.shape[2], q.shape[1])
    check(got, numpy_attention(q, k, v, lengths, obs), lengths, 1e-4, 1e-4)


@pytest.mark.parametrize("per_query_head", [False, True])
def test_scores_kernel_alone(per_query_head):
    """`chunk_scores` (the score kernel that runs beside cuDNN) gives the float64 scores, with nothing unwritten;
    T = 100 is not a multiple of its key block."""
    from pcomp_jax.kernels.triton import chunk_scores

    q, k, v = make_inputs(8, 3, 100, 6, 2, 64)
    lengths = jnp.asarray([100, 37, 1], jnp.int32)
    obs = jnp.asarray([[99, 98, 98, -1, 50], [36, 36, -1, 60, 5], [0, -1, 0, 10, -1]], jnp.int32)
    run = jax.jit(
        functools.partial(
            chunk_scores, per_query_head=per_query_head, blocks=Blocks(32, 16), interpret=True, poison=True
        ),
        compiler_options={"xla_backend_optimization_level": 0},
    )
    got = np.asarray(run(q, k, lengths, obs))
    want = numpy_attention(q, k, v, lengths, obs, per_query_head=per_query_head)[2]
    assert got.shape == want.shape and not np.isnan(got).any()
    assert rel_err(got, want) < 1e-4


def test_last_window_rows():
    """`last_rows`: the last `window` valid rows of each chunk (-1 where a chunk is shorter, never a repeat), and the
    kernel's scores for them."""
    lengths = jnp.asarray([60, 5, 0], jnp.int32)
    rows = np.asarray(last_rows(lengths, 8))
    np.testing.assert_array_equal(rows[0], np.arange(52, 60))
    np.testing.assert_array_equal(rows[1], [-1, -1, -1, 0, 1, 2, 3, 4])
    assert (rows[2] == -1).all()
    q, k, v = make_inputs(9, 3, 60, 4, 2, 64)
    got = run_kernel(q, k, v, lengths, jnp.asarray(rows), blocks=Blocks(32, 16))
    check(got, numpy_attention(q, k, v, lengths, rows), lengths, 1e-4, 1e-4)


def test_per_query_head_sums_to_grouped_scores():
    """per_query_head=True gives [C, N, T] per-head scores; summing each group gives the default [C, K, T]."""
    q, k, v = make_inputs(5, 2, 70, 4, 2, 64)
    lengths = jnp.asarray([70, 45], jnp.int32)
    obs = jnp.asarray([[69, 69, 3, -1, 40], [44, 0, -1, 44, 20]], jnp.int32)
    per_head = run_kernel(q, k, v, lengths, obs, per_query_head=True, blocks=Blocks(32, 16))
    grouped = run_kernel(q, k, v, lengths, obs, blocks=Blocks(32, 16))
    check(per_head, numpy_attention(q, k, v, lengths, obs, per_query_head=True), lengths, 1e-4, 1e-4)
    assert per_head.scores.shape == (2, 4, 70)
    summed = per_head.scores.reshape(2, 2, 2, 70).sum(axis=2)
    np.testing.assert_allclose(summed, grouped.scores, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(per_head.out, grouped.out)
    np.testing.assert_array_equal(per_head.lse, grouped.lse)


@pytest.mark.parametrize(
    ("dtype", "seed", "shape", "blocks"),
    [
        (jnp.bfloat16, 6, (2, 80, 4, 1, 128), Blocks(32, 16)),
        (jnp.float16, 7, (2, 80, 3, 1, 64), Blocks(64, 32)),
    ],
    ids=["bf16-gqa4-hd128", "f16-gqa3-hd64"],
)
def test_low_precision_matches_numpy(dtype, seed, shape, blocks):
    """bf16/f16 inputs: out (in the input dtype) within 1e-2 of float64 on the rounded inputs; lse, scores 1e-3."""
    q, k, v = make_inputs(seed, *shape, dtype)
    lengths = jnp.asarray([80, 29], jnp.int32)
    obs = jnp.asarray([[79, 78, 78, -1], [28, 27, 0, -1]], jnp.int32)
    got = run_kernel(q, k, v, lengths, obs, blocks=blocks)
    assert got.out.dtype == dtype and got.lse.dtype == jnp.float32 and got.scores.dtype == jnp.float32
    check(got, numpy_attention(q, k, v, lengths, obs), lengths, 1e-2, 1e-3)


def test_no_obs_rows_gives_no_scores():
    """Without obs_rows the kernel skips the score pass: scores is None, out and lse are still right."""
    q, k, v = make_inputs(8, 2, 50, 2, 1, 64)
    lengths = jnp.asarray([50, 17], jnp.int32)
    got = run_kernel(q, k, v, lengths, blocks=Blocks(32, 16))
    assert got.scores is None
    check(got, numpy_attention(q, k, v, lengths), lengths, 1e-4, 1e-4)


@pytest.mark.parametrize("per_query_head", [False, True])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_reference_matches_numpy(dtype, per_query_head):
    """The plain-jnp `reference` agrees with the numpy one (observation rows inside the lengths)."""
    q, k, v = make_inputs(9, 3, 40, 6, 2, 64, dtype)
    lengths = jnp.asarray([40, 13, 1], jnp.int32)
    obs = jnp.asarray([[39, 39, -1, 7], [12, 0, 5, -1], [0, -1, -1, 0]], jnp.int32)
    got = jit_reference(q, k, v, lengths, obs, per_query_head=per_query_head)
    want = numpy_attention(q, k, v, lengths, obs, per_query_head=per_query_head)
    tol_out = 1e-2 if dtype == jnp.bfloat16 else 1e-5
    check(got, want, lengths, tol_out, 1e-5)


def test_reference_normalises_observation_rows_in_padding():
    """An observation row past the length is a softmax over the chunk's keys in `reference` too."""
    q, k, v = make_inputs(10, 3, 40, 6, 2, 64)
    lengths = jnp.asarray([40, 20, 1], jnp.int32)
    obs = jnp.asarray([[39, 0, -1, 7], [30, 5, 5, -1], [0, 10, -1, -1]], jnp.int32)
    got = jit_reference(q, k, v, lengths, obs)
    assert rel_err(got.scores, numpy_attention(q, k, v, lengths, obs)[2]) < 1e-5


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "v_shape"),
    [
        ((1, 32, 3, 64), (1, 32, 2, 64), (1, 32, 2, 64)),  # N not a multiple of K
        ((1, 32, 4, 64), (1, 16, 2, 64), (1, 16, 2, 64)),  # T differs
        ((1, 32, 4, 64), (1, 32, 2, 128), (1, 32, 2, 128)),  # head dim differs
        ((1, 32, 4, 64), (1, 32, 2, 64), (1, 32, 1, 64)),  # v is not shaped like k
        ((2, 32, 4, 64), (1, 32, 2, 64), (1, 32, 2, 64)),  # chunk count differs
    ],
)
def test_bad_shapes_raise(q_shape, k_shape, v_shape):
    """Inconsistent q/k/v shapes are refused with ValueError before anything runs."""
    q, k, v = (jnp.zeros(s, jnp.float32) for s in (q_shape, k_shape, v_shape))
    with pytest.raises(ValueError, match="must be"):
        chunk_attention(q, k, v, jnp.full((q_shape[0],), 8, jnp.int32), interpret=True)


@pytest.mark.parametrize(("dtype", "head_dim"), [(jnp.bfloat16, 128), (jnp.float16, 64)])
def test_lowers_to_triton_for_cuda(dtype, head_dim):
    """With default blocks and obs rows the kernels (attention, then scores) lower for CUDA, from the CPU, to Triton
    custom calls; with fused scores, to one."""
    c, t, n, kh, w = 2, 256, 8, 2, 8
    shapes = [
        jax.ShapeDtypeStruct((c, t, n, head_dim), dtype),
        jax.ShapeDtypeStruct((c, t, kh, head_dim), dtype),
        jax.ShapeDtypeStruct((c, t, kh, head_dim), dtype),
        jax.ShapeDtypeStruct((c,), jnp.int32),
        jax.ShapeDtypeStruct((c, w), jnp.int32),
    ]
    text = jax.jit(chunk_attention).trace(*shapes).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("xla.gpu.triton") == 2 and "chunk_attention" in text and "chunk_scores" in text
    fused = jax.jit(functools.partial(chunk_attention, blocks=Blocks(fused_scores=True)))
    text = fused.trace(*shapes).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("xla.gpu.triton") == 1 and "chunk_attention_scores" in text


def test_benchmark_script_runs_small(tmp_path):
    """benchmarks/attention_kernel.py (the GPU benchmark) runs on tiny shapes in interpret mode and checks itself."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(root / "benchmarks" / "attention_kernel.py"), "--small", "--interpret"]
    cmd += ["--shapes", "tiny-gqa3", "--max-configs", "2", "--repeats", "1", "--input-sets", "1", "--out", str(out)]
    subprocess.run(
        cmd, check=True, cwd=root, capture_output=True, env={**__import__("os").environ, "PYTHONPATH": str(root)}
    )
    rows = json.loads(out.read_text())["rows"]
    ours = [r for r in rows if r["variant"].startswith("pallas+scores")]
    assert len(ours) == 2 and all("error" not in r for r in rows) and any(r["variant"].startswith("(d)") for r in rows)
    assert all(r["err_out"] < 1e-2 and r["err_scores"] < 1e-3 for r in ours)


def _tiny_model():
    from pcomp_jax.config import LlamaConfig
    from pcomp_jax.model import init_params

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=96,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        max_position_embeddings=256,
    )
    return config, init_params(config, jax.random.key(0))


def test_model_scores_agree_across_backends_for_any_rows():
    """forward(score_rows=) gives the same scores in every layer with the reference and Pallas backends, also for
    rows in the padding, -1 and rows past T (ignored), because padding rows attend to nothing on every backend."""
    from pcomp_jax.model import forward

    config, params = _tiny_model()
    t = 32
    tokens = jax.random.randint(jax.random.key(1), (1, t), 0, config.vocab_size)
    valid = (jnp.arange(t) < 20)[None]
    rows = jnp.asarray([[16, 17, 18, 19, 25, 30, -1, 40]])
    got = {}
    for backend in ("reference", "pallas"):
        out, _ = forward(
            params, config, tokens, jnp.arange(t)[None], token_valid=valid, score_rows=rows, attention_backend=backend
        )
        got[backend] = (np.asarray(out.scores), np.asarray(out.hidden))
    np.testing.assert_allclose(got["pallas"][0], got["reference"][0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["pallas"][1], got["reference"][1], rtol=1e-4, atol=1e-5)
    assert got["reference"][0][:, :, :, 20:].max() == 0  # padding keys get nothing
    np.testing.assert_allclose(got["reference"][0].sum(-1), 6.0, rtol=1e-5)  # 6 rows in [0, T), each sums to 1


def test_gpu_default_takes_scores_from_the_score_kernel(monkeypatch):
    """The "cudnn" backend on a GPU (simulated: cuDNN replaced by the jnp causal attention, the score kernel run in
    interpret mode) returns the score kernel's scores, equal to the jnp pass of the reference backend."""
    from pcomp_jax import attention
    from pcomp_jax.kernels import triton

    calls = []
    original = triton.chunk_scores

    def scores_in_interpreter(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs, interpret=True)

    def fake_cudnn(q, k, v, lengths):
        valid = jnp.arange(q.shape[1])[None, :, None] < lengths[:, None, None]
        return attention.causal_attention(q, k, v, jnp.broadcast_to(valid, k.shape[:3]))

    q, k, v = make_inputs(11, 2, 64, 4, 2, 64)
    q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    token_valid = jnp.arange(64)[None, :] < jnp.asarray([[64], [40]])
    rows = jnp.asarray([[60, 63, 10], [39, 30, -1]])
    want = attention.fresh_attention(q, k, v, token_valid, "reference", rows)
    monkeypatch.setattr(attention.jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(attention, "cudnn_causal_attention", fake_cudnn)
    monkeypatch.setattr(attention, "_score_kernel_ok", True)  # the compile check needs a real GPU
    monkeypatch.setattr(triton, "chunk_scores", scores_in_interpreter)
    got = attention.fresh_attention(q, k, v, token_valid, "cudnn", rows)
    assert calls, "the score kernel was not used"
    np.testing.assert_array_equal(np.asarray(got[0], np.float32), np.asarray(want[0], np.float32))
    assert rel_err(got[1], want[1]) < 1e-3


def test_score_kernel_that_cannot_compile_falls_back_with_one_warning(monkeypatch, capsys):
    """On a GPU whose JAX lacks the Triton lowering (or fails to compile the kernel), the "cudnn" backend takes the
    scores from the jnp pass after one warning line (simulated on the CPU, as above)."""
    from pcomp_jax import attention

    def fake_cudnn(q, k, v, lengths):
        valid = jnp.arange(q.shape[1])[None, :, None] < lengths[:, None, None]
        return attention.causal_attention(q, k, v, jnp.broadcast_to(valid, k.shape[:3]))

    def no_triton():
        raise ImportError("cannot import name 'triton' from 'jax.experimental.pallas'")

    q, k, v = make_inputs(12, 2, 64, 4, 2, 64)
    q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    token_valid = jnp.arange(64)[None, :] < jnp.asarray([[64], [40]])
    rows = jnp.asarray([[60, 63, 10], [39, 30, -1]])
    want = attention.fresh_attention(q, k, v, token_valid, "reference", rows)
    monkeypatch.setattr(attention, "_score_kernel_ok", None)
    monkeypatch.setattr(attention, "_compile_score_kernel", no_triton)
    monkeypatch.setattr(attention.jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(attention, "cudnn_causal_attention", fake_cudnn)
    assert attention.resolve_backend("auto") == "cudnn"
    for _ in range(2):
        got = attention.fresh_attention(q, k, v, token_valid, "cudnn", rows)
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: Pallas score kernel unavailable (cannot import name")
    assert "using the jnp score pass" in err


@pytest.mark.parametrize(
    "backend, dtype, head_dim, wants, platform, kernels",
    [
        ("reference", jnp.float32, 64, True, "cpu", ("reference", "jnp scores")),
        ("pallas", jnp.float32, 64, True, "cpu", ("pallas", None)),  # interpret mode
        ("pallas", jnp.float32, 64, False, "cpu", ("reference", None)),  # no scores asked: not the scoring kernel
        ("cudnn", jnp.bfloat16, 64, True, "gpu", ("cudnn", "triton scores")),
        ("cudnn", jnp.bfloat16, 64, False, "gpu", ("cudnn", None)),
        ("cudnn", jnp.float32, 64, True, "gpu", ("reference", "jnp scores")),  # cuDNN takes half precision only
        ("pallas", jnp.bfloat16, 64, True, "gpu", ("pallas", None)),
        ("pallas", jnp.bfloat16, 96, True, "gpu", ("cudnn", "jnp scores")),  # head dim the kernels do not take
    ],
)
def test_kernels_declare_what_they_take(monkeypatch, backend, dtype, head_dim, wants, platform, kernels):
    from pcomp_jax import attention

    monkeypatch.setattr(attention, "_score_kernel_ok", True)  # the compile check needs a real GPU
    q = jnp.zeros((1, 16, 4, head_dim), dtype)
    kernel, scorer = attention.choose_kernels(backend, q, wants, platform)
    assert (kernel.name, scorer and scorer.name) == kernels
