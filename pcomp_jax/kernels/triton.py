"""The chunk-attention contract (`pcomp_jax.kernels`) as Pallas kernels with the Triton lowering.

`chunk_attention(q, k, v, lengths, obs_rows)` computes, for right-padded chunks,

- out [C, T, N, H]: causal attention (query t sees keys 0..t of its own chunk that are < its length), GQA in the
  kernel (query head n reads KV head n // G, the KV heads are never repeated); padding rows are zeros;
- lse [C, N, T] float32: the natural log-sum-exp of each query row's scaled logits (-inf on padding rows);
- scores [C, K, T] float32 (or [C, N, T] with `per_query_head=True`): for each key, the sum over the observation rows
  of the exact softmax probability the row gives it (each row's final normaliser, as `attention.observation_scores`),
  summed over the query heads of a KV head's group. Observation rows are any index set, e.g. the question tokens,
  or `attention.last_rows(lengths, window)`, the last `window` valid rows of each chunk.

Attention grid: (query block, query head, chunk), heaviest query blocks first (causal work grows with the block
index), query heads of one group adjacent so their shared K/V blocks stay in L2. Each program runs the
flash-attention recurrence over the key blocks it can see: the blocks fully below the diagonal and inside the length
without a mask, then the diagonal/length-edge blocks with one. Everything is float32 inside; operands stay in the
input dtype.

Scores: one program per (head, chunk) reads the observation rows' logits twice (once for their normaliser, once for
the probabilities; W rows x T keys, about 1% of the attention FLOPs at W=32, T=8192, in tiles of up to 256 keys)
and writes the whole score row, zeros included. By default that program is a second, small launch; with
`Blocks(fused_scores=True)` it is the first program of the attention grid for each (chunk, head) instead, which
measured slower on the H100 (every attention program then carries the score code). Why Triton rather than Mosaic
GPU, and the measurements: docs/KERNELS.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from pcomp_jax.heads import group_scores
from pcomp_jax.kernels.contract import AttentionOutput

LOG2E = math.log2(math.e)
_MASK = -1e30  # finite, so a row with no visible key in a block never produces inf - inf
MIN_OBS_ROWS = 16  # the smallest matmul tile Triton accepts


@dataclasses.dataclass(frozen=True)
class Blocks:
    """Tile sizes, launch settings and two arithmetic shortcuts (tuned on an H100 by benchmarks/attention_kernel.py).

    fast_exp2: the hardware `ex2.approx` instruction instead of libdevice's exp2f on the GPU (interpret mode always
      uses jnp.exp2). prescale_q: fold the softmax scale into q once per block instead of scaling every logit tile
      (one extra rounding of q in its own dtype). fused_scores: the scores inside the attention program (True) or in a
      second, small launch right after it (False, the default: measured faster, docs/KERNELS.md). heavy_first: launch
      the query blocks with the most causal work first.
    """

    block_q: int = 128
    block_k: int = 64
    num_warps: int = 8
    num_stages: int = 3
    fast_exp2: bool = True
    prescale_q: bool = False
    fused_scores: bool = False
    heavy_first: bool = True


def default_blocks(head_dim: int) -> Blocks:
    """The fastest configuration measured on the H100 (docs/BENCHMARKS.md) for the two benchmarked head dims."""
    return Blocks(64, 64, num_warps=4, num_stages=4) if head_dim <= 64 else Blocks(128, 128, num_warps=8, num_stages=3)


def _dot_t(a, b):
    """a [M, H] @ b[S, H]^T in float32."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def _dot(a, b):
    return lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def _exp2_approx(x):
    return plgpu.elementwise_inline_asm(
        "ex2.approx.ftz.f32 $0, $1;",
        args=[x],
        constraints="=r,r",
        pack=1,
        result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, jnp.float32)],
    )[0]


def _scaled(q, qk_scale, prescale):
    """(q operand, multiplier for its logits): the scale folded into q, or applied to each logit tile."""
    if prescale:
        return (q.astype(jnp.float32) * qk_scale).astype(q.dtype), None
    return q, qk_scale


def _kernel(
    len_ref,
    q_ref,
    k_ref,
    v_ref,
    *refs,
    block_q,
    block_k,
    num_k_blocks,
    scale,
    with_scores,
    exp2,
    prescale,
    score_block,
    block_index,
):
    if with_scores:
        obs_slots_ref, obs_q_ref, o_ref, lse_ref, scores_ref = refs
    else:
        o_ref, lse_ref = refs
    qi = block_index(pl.program_id(0))
    length = len_ref[0]
    qk_scale = scale * LOG2E  # logits in base 2: exp2 is cheaper than exp
    q, mult = _scaled(q_ref[...], qk_scale, prescale)  # [bq, H]
    rows = qi * block_q + jnp.arange(block_q)

    def visit(j, carry, masked):
        acc, m, denom = carry
        keys = pl.ds(j * block_k, block_k)
        s = _dot_t(q, k_ref[keys, :])  # [bq, bk]
        s = s if mult is None else s * mult
        if masked:
            cols = j * block_k + jnp.arange(block_k)
            s = jnp.where((cols[None, :] <= rows[:, None]) & (cols < length)[None, :], s, _MASK)
        m_new = jnp.maximum(m, s.max(axis=1))
        p = exp2(s - m_new[:, None])
        alpha = exp2(m - m_new)
        acc = acc * alpha[:, None] + _dot(p.astype(v_ref.dtype), v_ref[keys, :])
        return acc, m_new, denom * alpha + p.sum(axis=1)

    head_dim = q.shape[-1]
    carry = (jnp.zeros((block_q, head_dim), jnp.float32), jnp.full((block_q,), _MASK, jnp.float32))
    carry = carry + (jnp.zeros((block_q,), jnp.float32),)
    live = qi * block_q < length  # a block of padding rows does no work
    visible = jnp.minimum(lax.div((qi + 1) * block_q + block_k - 1, block_k), lax.div(length + block_k - 1, block_k))
    visible = jnp.where(live, visible, 0)
    unmasked = jnp.minimum(jnp.minimum(lax.div(qi * block_q + 1, block_k), lax.div(length, block_k)), visible)
    carry = lax.fori_loop(0, unmasked, functools.partial(visit, masked=False), carry)
    acc, m, denom = lax.fori_loop(unmasked, visible, functools.partial(visit, masked=True), carry)

    row_valid = rows < length
    denom = jnp.where(row_valid, denom, 1.0)
    o_ref[...] = jnp.where(row_valid[:, None], acc / denom[:, None], 0.0).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(row_valid, (m + jnp.log2(denom)) / LOG2E, -jnp.inf)

    if with_scores:

        @pl.when(pl.program_id(0) == 0)
        def _():
            qo, obs_mult = _scaled(obs_q_ref[...], qk_scale, prescale)
            _scores(length, obs_slots_ref, qo, obs_mult, k_ref, scores_ref, score_block, num_k_blocks * block_k, exp2)


def _scores(length, obs_slots_ref, qo, mult, k_ref, scores_ref, block_k, padded_len, exp2):
    """scores[j] = sum over observation rows r of softmax_r(j), for every key block (zeros where no row looks)."""
    slots = obs_slots_ref[...]  # [Wp], -1 for padding rows
    reach = jnp.minimum(slots.max() + 1, length)  # keys beyond this get no attention
    seen = lax.div(jnp.maximum(reach, 0) + block_k - 1, block_k)

    def logits(j):
        cols = j * block_k + jnp.arange(block_k)
        s = _dot_t(qo, k_ref[pl.ds(j * block_k, block_k), :])
        s = s if mult is None else s * mult
        visible = (cols[None, :] <= slots[:, None]) & (cols < length)[None, :]
        return jnp.where(visible, s, _MASK), visible

    def normaliser(j, carry):
        m, denom = carry
        s, _ = logits(j)
        m_new = jnp.maximum(m, s.max(axis=1))
        return m_new, denom * exp2(m - m_new) + exp2(s - m_new[:, None]).sum(axis=1)

    rows = slots.shape[0]
    start = (jnp.full((rows,), _MASK, jnp.float32), jnp.zeros((rows,), jnp.float32))
    m, denom = lax.fori_loop(0, seen, normaliser, start)
    lse = m + jnp.log2(jnp.where(denom > 0, denom, 1.0))

    def probabilities(j, carry):
        s, visible = logits(j)
        scores_ref[pl.ds(j * block_k, block_k)] = jnp.where(visible, exp2(s - lse[:, None]), 0.0).sum(axis=0)
        return carry

    def zeros(j, carry):
        scores_ref[pl.ds(j * block_k, block_k)] = jnp.zeros((block_k,), jnp.float32)
        return carry

    lax.fori_loop(0, seen, probabilities, ())
    lax.fori_loop(seen, padded_len // block_k, zeros, ())


def _check_shapes(q, k, v=None):
    c, t, n, h = q.shape
    kh = k.shape[2]
    if k.shape != (c, t, kh, h) or (v is not None and v.shape != k.shape) or n % kh:
        got = f"k {k.shape}" if v is None else f"k/v {k.shape}/{v.shape}"
        raise ValueError(f"q {q.shape} and {got} must be [C, T, N, H] and [C, T, K, H], K | N")


def _pad_time(tp, *xs):
    """Right-pad [C, T, ...] arrays to T = tp (whole blocks; never needed in the pipeline, whose T is bucketed)."""
    return [x if x.shape[1] == tp else jnp.pad(x, [(0, 0), (0, tp - x.shape[1])] + [(0, 0)] * (x.ndim - 2)) for x in xs]


def _score_block(tp: int, block_k: int) -> int:
    """Keys per tile in the score pass: as many as divide the padded length, up to 256."""
    return max(b for b in (256, 128, block_k) if tp % b == 0 and b % block_k == 0)


def _observation_inputs(q, obs_rows, t):
    """Rows padded with -1 to a power of two >= 16 (the smallest Triton matmul) and their queries [C, Wp, N, H]."""
    obs_rows = obs_rows.astype(jnp.int32)
    w = obs_rows.shape[1]
    obs_rows = jnp.pad(obs_rows, [(0, 0), (0, max(MIN_OBS_ROWS, pl.next_power_of_2(w)) - w)], constant_values=-1)
    obs_q = jnp.take_along_axis(q, jnp.clip(obs_rows, 0, t - 1)[:, :, None, None], axis=1)
    return jnp.where(obs_rows < t, obs_rows, -1), obs_q


def _score_specs(wp, h):
    """BlockSpecs of (obs slots, obs queries) for a grid whose last two axes are (query head, chunk)."""
    return [
        pl.BlockSpec((None, wp), lambda *g: (g[-1], 0)),
        pl.BlockSpec((None, wp, None, h), lambda *g: (g[-1], 0, g[-2], 0)),
    ]


def _exp2(blocks: Blocks, interpret: bool):
    return _exp2_approx if blocks.fast_exp2 and not interpret else jnp.exp2


def _result_scores(scores, t, kh, per_query_head):
    """Per-query-head scores [C, N, Tp] of a launch -> [C, N, T], or [C, K, T] summed over each KV head's group."""
    scores = scores[:, :, :t]
    return scores if per_query_head else group_scores(scores, kh)


@functools.partial(jax.jit, static_argnames=("per_query_head", "blocks", "interpret", "poison"))
def chunk_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    lengths: jax.Array,
    obs_rows: jax.Array | None = None,
    *,
    per_query_head: bool = False,
    blocks: Blocks | None = None,
    interpret: bool = False,
    poison: bool = False,
) -> AttentionOutput:
    """Causal attention with importance scores for right-padded chunks (see the module docstring).

    q [C, T, N, H]; k, v [C, T, K, H] (N a multiple of K); lengths [C] valid tokens per chunk; obs_rows [C, W] int32
    indices into T of the observation rows (repeats count twice, entries outside [0, T) are ignored), or None for no
    scores. `interpret` runs the kernel through the Pallas interpreter (any backend; slow). `poison` (tests) starts
    every output as NaN, so an element the kernel never writes shows up (on the GPU, unwritten memory could hold
    anything; the Pallas interpreter happens to start outputs as NaN too).
    """
    _check_shapes(q, k, v)
    c, t, n, h = q.shape
    kh = k.shape[2]
    blocks = blocks or default_blocks(h)
    bq, bk = blocks.block_q, blocks.block_k
    tp = -(-t // math.lcm(bq, bk)) * math.lcm(bq, bk)
    q, k, v = _pad_time(tp, q, k, v)
    nq, nk = tp // bq, tp // bk
    block_index = (lambda i: nq - 1 - i) if blocks.heavy_first else (lambda i: i)  # program -> query block
    lengths = jnp.minimum(lengths.astype(jnp.int32), t)[:, None]  # [C, 1]
    fused = obs_rows is not None and blocks.fused_scores
    kernel = functools.partial(
        _kernel,
        block_q=bq,
        block_k=bk,
        num_k_blocks=nk,
        scale=h**-0.5,
        with_scores=fused,
        exp2=_exp2(blocks, interpret),
        prescale=blocks.prescale_q,
        score_block=_score_block(tp, bk),
        block_index=block_index,
    )
    group = n // kh
    in_specs = [
        pl.BlockSpec((None, 1), lambda i, j, b: (b, 0)),
        pl.BlockSpec((None, bq, None, h), lambda i, j, b: (b, block_index(i), j, 0)),
        pl.BlockSpec((None, tp, None, h), lambda i, j, b: (b, 0, j // group, 0)),
        pl.BlockSpec((None, tp, None, h), lambda i, j, b: (b, 0, j // group, 0)),
    ]
    out_specs = [
        pl.BlockSpec((None, bq, None, h), lambda i, j, b: (b, block_index(i), j, 0)),
        pl.BlockSpec((None, None, bq), lambda i, j, b: (b, j, block_index(i))),
    ]
    out_shape = [jax.ShapeDtypeStruct((c, tp, n, h), q.dtype), jax.ShapeDtypeStruct((c, n, tp), jnp.float32)]
    args = [lengths, q, k, v]
    if fused:
        obs_slots, obs_q = _observation_inputs(q, obs_rows, t)
        in_specs += _score_specs(obs_slots.shape[1], h)
        out_specs.append(pl.BlockSpec((None, None, tp), lambda i, j, b: (b, j, 0)))
        out_shape.append(jax.ShapeDtypeStruct((c, n, tp), jnp.float32))
        args += [obs_slots, obs_q]
    name = "chunk_attention_scores" if fused else "chunk_attention"
    outs = _launch(kernel, (nq, n, c), in_specs, out_specs, out_shape, args, name, blocks, interpret, poison)
    out, lse = outs[0][:, :t], outs[1][:, :, :t]
    scores = None
    if obs_rows is not None:  # the second launch reuses the padded q and k (tp is a multiple of block_k)
        per_head = outs[2] if fused else _score_launch(q, k, lengths, obs_rows, t, blocks, interpret, poison)
        scores = _result_scores(per_head, t, kh, per_query_head)
    return AttentionOutput(out, lse, scores)


@functools.partial(jax.jit, static_argnames=("per_query_head", "blocks", "interpret", "poison"))
def chunk_scores(
    q: jax.Array,
    k: jax.Array,
    lengths: jax.Array,
    obs_rows: jax.Array,
    *,
    per_query_head: bool = False,
    blocks: Blocks | None = None,
    interpret: bool = False,
    poison: bool = False,
) -> jax.Array:
    """The importance scores alone (`chunk_attention(...).scores`), one program per (query head, chunk).

    Also serves beside another attention implementation (cuDNN): it needs only q, k and the observation rows, and
    computes each row's normaliser itself.
    """
    _check_shapes(q, k)
    t, h = q.shape[1], q.shape[3]
    blocks = blocks or default_blocks(h)
    q, k = _pad_time(-(-t // blocks.block_k) * blocks.block_k, q, k)
    lengths = jnp.minimum(lengths.astype(jnp.int32), t)[:, None]
    per_head = _score_launch(q, k, lengths, obs_rows, t, blocks, interpret, poison)
    return _result_scores(per_head, t, k.shape[2], per_query_head)


def _score_launch(q, k, lengths, obs_rows, t, blocks, interpret, poison):
    """The score kernel on q, k already padded to Tp (a multiple of block_k) and lengths [C, 1] -> [C, N, Tp]."""
    c, tp, n, h = q.shape
    group = n // k.shape[2]
    obs_slots, obs_q = _observation_inputs(q, obs_rows, t)
    kernel = functools.partial(
        _score_kernel,
        block_k=_score_block(tp, blocks.block_k),
        padded_len=tp,
        scale=h**-0.5,
        exp2=_exp2(blocks, interpret),
        prescale=blocks.prescale_q,
    )
    in_specs = [pl.BlockSpec((None, 1), lambda j, b: (b, 0))] + _score_specs(obs_slots.shape[1], h)
    in_specs.append(pl.BlockSpec((None, tp, None, h), lambda j, b: (b, 0, j // group, 0)))
    out_specs = [pl.BlockSpec((None, None, tp), lambda j, b: (b, j, 0))]
    out_shape = [jax.ShapeDtypeStruct((c, n, tp), jnp.float32)]
    args = [lengths, obs_slots, obs_q, k]
    return _launch(kernel, (n, c), in_specs, out_specs, out_shape, args, "chunk_scores", blocks, interpret, poison)[0]


def _score_kernel(len_ref, obs_slots_ref, obs_q_ref, k_ref, scores_ref, *, block_k, padded_len, scale, exp2, prescale):
    qo, mult = _scaled(obs_q_ref[...], scale * LOG2E, prescale)
    _scores(len_ref[0], obs_slots_ref, qo, mult, k_ref, scores_ref, block_k, padded_len, exp2)


def _launch(kernel, grid, in_specs, out_specs, out_shape, args, name, blocks, interpret, poison):
    """pallas_call; with `poison`, every output starts as a NaN buffer aliased into the call."""
    aliases = {}
    if poison:
        aliases = {len(args) + i: i for i in range(len(out_shape))}
        args = args + [jnp.full(s.shape, jnp.nan, s.dtype) for s in out_shape]
        in_specs = in_specs + out_specs
        kernel = _ignore_poison(kernel, len(out_shape))
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        input_output_aliases=aliases,
        compiler_params=plgpu.CompilerParams(num_warps=blocks.num_warps, num_stages=blocks.num_stages),
        interpret=interpret,
        name=name,
    )(*args)


def _ignore_poison(kernel, num_outputs):
    """The kernel with the aliased poisoned input refs dropped (they are the same buffers as the outputs)."""

    def wrapped(*refs):
        n_in = len(refs) - 2 * num_outputs
        return kernel(*refs[:n_in], *refs[n_in + num_outputs :])

    return wrapped
