"""Attention backends behind one switch: a plain-`jnp` reference, cuDNN flash attention and our Pallas kernel.

All take q [B, T, N, H] and keys/values stored once per KV head [B, S, K, H] (GQA, never repeated). The mask is
slot-based (see cache.py): query t sits at slot `q_slots[t]` and sees key slot s iff `s <= q_slots[t]` and the key is
valid for its KV head.

- "reference": head-major batched matmuls in float32 accumulation, blocked over queries so a long prefill never
  holds a [T, S] score matrix per head at once (the fastest form we measured on XLA:CPU).
- "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, used for the fresh causal prefill on GPU in
  bfloat16/float16 (keys are exactly the new tokens, right-padded); float32 models and masked attention over an
  existing cache use the reference.
- "pallas": `kernels.triton.chunk_attention` for a fresh prefill that asks for observation scores (token
  eviction): our attention kernel, then our score kernel (interpret mode off the GPU); other fresh prefills as
  "cudnn".
- "auto": "cudnn" on a GPU, the reference elsewhere (`AUTO`). Not "pallas": on the H100 our attention kernel is
  still slower than cuDNN (0.84x on the Llama-3-8B chunk shape, docs/BENCHMARKS.md), so auto picks cuDNN and takes
  only the scores from Pallas.

Each implementation is a `Kernel` that declares what it takes (the backend settings that may pick it, platforms,
query dtypes, shapes, whether it gives scores); `fresh_attention` runs the first of `ATTENTION_KERNELS` that takes
the call, then, if scores were asked for and it gave none, the first of `SCORE_KERNELS` that does.

Observation scores (`observation_scores`, or the kernel's) are, per query head, the softmax mass each key receives
from a few observation rows, summed over the rows, with each row's full normaliser (docs/ALGORITHM.md 1.5).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from pcomp_jax.choices import Backend
from pcomp_jax.errors import first_line

MASK_VALUE = -1e30  # finite, so rows with no visible key (padding queries) give zeros instead of NaN
QUERY_BLOCK = 512
BACKENDS = tuple(Backend)
AUTO = {"gpu": Backend.CUDNN}  # "auto" per platform, the reference elsewhere; not Pallas: slower than cuDNN (above)


def resolve_backend(backend: str) -> str:
    """Concrete backend name for `backend` on the current default device (on a GPU, also checks once that our
    Pallas score kernel works there: `score_kernel_usable`)."""
    backend = Backend.parse(backend, "attention backend")
    if jax.default_backend() == "gpu" and backend != "reference":
        score_kernel_usable()
    if backend == Backend.AUTO:
        return AUTO.get(jax.default_backend(), Backend.REFERENCE)
    return backend


_score_kernel_ok: bool | None = None  # None: not checked yet in this process


def _compile_score_kernel() -> None:
    """Compile our Pallas score kernel (Triton lowering, deprecated in JAX 0.11) for a tiny shape, running nothing."""
    from pcomp_jax.kernels.triton import chunk_scores

    q = jax.ShapeDtypeStruct((1, 64, 2, 64), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((1, 64, 1, 64), jnp.bfloat16)
    ints = jax.ShapeDtypeStruct((1,), jnp.int32), jax.ShapeDtypeStruct((1, 4), jnp.int32)
    chunk_scores.lower(q, k, *ints, per_query_head=True).compile()


def score_kernel_usable() -> bool:
    """Whether the score kernel imports and compiles on this GPU (checked once per process). If not, the jnp score
    pass is used instead, after one warning line on stderr: a JAX without the Triton lowering still runs."""
    global _score_kernel_ok
    if _score_kernel_ok is None:
        try:
            _compile_score_kernel()
            _score_kernel_ok = True
        except Exception as err:  # ImportError without the lowering; lowering or compiler errors of many types
            print(
                f"warning: Pallas score kernel unavailable ({first_line(err, 160)}); using the jnp score pass",
                file=sys.stderr,
            )
            _score_kernel_ok = False
    return _score_kernel_ok


def masked_softmax(logits: jax.Array, visible: jax.Array, axis: int = -1) -> jax.Array:
    """softmax over `axis` of the visible logits (float32); invisible entries get 0, and so does every entry of a row
    with no visible key (instead of NaN or a uniform row). `visible` broadcasts against `logits`."""
    probs = jax.nn.softmax(jnp.where(visible, logits, MASK_VALUE), axis=axis)
    return jnp.where(visible, probs, 0.0)


def _attend_block(q, k, v, q_slots, key_valid, scale, key_bias=None):
    """q [B, K, G, Tq, H], k/v [B, K, S, H], q_slots [Tq], key_valid [B, K, S], key_bias [B, S] or None
    -> [B, K, G, Tq, H]."""
    b, kh, g, tq, h = q.shape
    qf = q.reshape(b, kh, g * tq, h)  # [B, K, G*Tq, H]: one batched matmul per KV head
    logits = jnp.einsum("bkqh,bksh->bkqs", qf, k, preferred_element_type=jnp.float32) * scale
    logits = logits.reshape(b, kh, g, tq, -1)  # [B, K, G, Tq, S]
    if key_bias is not None:
        logits = logits + key_bias[:, None, None, None, :]
    k_slots = jnp.arange(k.shape[2])
    visible = (k_slots[None, :] <= q_slots[:, None])[None, None, None] & key_valid[:, :, None, None, :]
    probs = masked_softmax(logits, visible).astype(v.dtype)
    out = jnp.einsum("bkqs,bksh->bkqh", probs.reshape(b, kh, g * tq, -1), v, preferred_element_type=jnp.float32)
    return out.reshape(b, kh, g, tq, h).astype(q.dtype)


def reference_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_slots: jax.Array,
    key_valid: jax.Array,
    block: int = QUERY_BLOCK,
    key_bias: jax.Array | None = None,
) -> jax.Array:
    """Masked attention in plain jnp.

    q [B, T, N, H], k/v [B, S, K, H], q_slots [T], key_valid [B, S, K], key_bias [B, S] (added to the logits) or
    None -> [B, T, N, H].
    """
    b, t, n, h = q.shape
    kh = k.shape[2]
    g = n // kh
    scale = h**-0.5
    qh = q.reshape(b, t, kh, g, h).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, H]
    kt = k.transpose(0, 2, 1, 3)  # [B, K, S, H]
    vt = v.transpose(0, 2, 1, 3)
    valid = key_valid.transpose(0, 2, 1)  # [B, K, S]
    if t <= block:
        out = _attend_block(qh, kt, vt, q_slots, valid, scale, key_bias)
    else:
        nblocks = -(-t // block)
        pad = nblocks * block - t
        qp = jnp.pad(qh, [(0, 0)] * 3 + [(0, pad), (0, 0)])
        sp = jnp.pad(q_slots, (0, pad), constant_values=-1)  # padded queries see nothing
        qb = qp.reshape(b, kh, g, nblocks, block, h).transpose(3, 0, 1, 2, 4, 5)  # [nb, B, K, G, blk, H]
        sb = sp.reshape(nblocks, block)
        outs = lax.map(lambda xs: _attend_block(xs[0], kt, vt, xs[1], valid, scale, key_bias), (qb, sb))
        out = outs.transpose(1, 2, 3, 0, 4, 5).reshape(b, kh, g, nblocks * block, h)[:, :, :, :t]
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)  # [B, T, N, H]


def decode_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, q_slot: jax.Array, key_valid: jax.Array, key_bias: jax.Array | None = None
) -> jax.Array:
    """Attention of one new token per row over a cache, reading the cache once in its stored layout.

    q [B, 1, N, H]; k/v [B, S, K, H]; q_slot scalar (the token's slot); key_valid [B, S, K]; key_bias [B, S] (added
    to the logits) or None -> [B, 1, N, H].
    A decode step is bound by reading the cache. Contracting a [B, S, K, H] cache per KV head makes XLA transpose it
    to [B, K, S, H] first (a copy of the cache per layer and step), so instead every KV head's keys meet every
    query head as one [S, K*H] x [K*H, N] matmul against a block-diagonal query (head n's H values in rows of its
    KV head n // G, zeros elsewhere): the keys are read in place, and the K-fold arithmetic is free in a step that
    waits for memory. The values likewise: [N, S] x [S, K*H], keeping each query head's own KV head block.
    """
    b, _, n, h = q.shape
    s, kh = k.shape[1], k.shape[2]
    g = n // kh
    own = jnp.arange(n)[:, None] // g == jnp.arange(kh)[None, :]  # [N, K]: query head n reads KV head n // G
    q_block = jnp.where(own[None, :, :, None], q[:, 0, :, None, :], 0).astype(q.dtype)  # [B, N, K, H]
    q_block = q_block.reshape(b, n, kh * h)
    logits = jnp.einsum("bsc,bnc->bsn", k.reshape(b, s, kh * h), q_block, preferred_element_type=jnp.float32)
    logits = logits * h**-0.5  # [B, S, N]
    if key_bias is not None:
        logits = logits + key_bias[:, :, None]
    visible = (jnp.arange(s) <= q_slot)[None, :, None] & jnp.repeat(key_valid, g, axis=2)  # [B, S, N]
    probs = masked_softmax(logits, visible, axis=1).astype(v.dtype)
    out = jnp.einsum("bsn,bsc->bnc", probs, v.reshape(b, s, kh * h), preferred_element_type=jnp.float32)
    out = out.reshape(b, n, kh, h)
    out = jnp.sum(jnp.where(own[None, :, :, None], out, 0), axis=2)  # [B, N, H]: each head's own KV head block
    return out[:, None].astype(q.dtype)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_valid: jax.Array, block: int = QUERY_BLOCK):
    """Causal attention over fresh tokens (query t at slot t), skipping the blocks above the diagonal.

    q [B, T, N, H], k/v [B, T, K, H], key_valid [B, T, K] -> [B, T, N, H]. Query block i only reads keys
    [0, end of block i), so about half the work of masked attention over all keys.
    """
    t = q.shape[1]
    outs = []
    for start in range(0, t, block):
        stop = min(start + block, t)
        outs.append(
            reference_attention(
                q[:, start:stop], k[:, :stop], v[:, :stop], jnp.arange(start, stop), key_valid[:, :stop], block=block
            )
        )
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


def cudnn_causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, lengths: jax.Array) -> jax.Array:
    """Causal attention over right-padded fresh tokens with cuDNN. q [B, T, N, H], k/v [B, T, K, H], lengths [B]."""
    return jax.nn.dot_product_attention(
        q,
        k,
        v,
        is_causal=True,
        query_seq_lengths=lengths,
        key_value_seq_lengths=lengths,
        implementation="cudnn",
    )


def observation_scores(
    rows_q: jax.Array, keys: jax.Array, key_valid: jax.Array, row_slots: jax.Array, key_bias: jax.Array | None = None
) -> jax.Array:
    """Attention mass each key receives from the observation rows, summed over the rows, in plain jnp.

    rows_q [B, W, N, H] post-RoPE queries of the rows; keys [B, S, K, H]; key_valid [B, S, K]; row_slots [W] or
    [B, W] (a row sees keys at slots <= its own); key_bias [B, S] added to the logits, or None. Probabilities use each
    row's full softmax normaliser.
    Returns [B, N, S] float32.
    """
    b, w, n, h = rows_q.shape
    kh = keys.shape[2]
    q = rows_q.reshape(b, w, kh, n // kh, h)  # [B, W, K, G, H]
    logits = jnp.einsum("bwkgh,bskh->bkgws", q, keys, preferred_element_type=jnp.float32) * h**-0.5
    if key_bias is not None:
        logits = logits + key_bias[:, None, None, None, :]
    visible = jnp.arange(keys.shape[1]) <= row_slots[..., None]  # [W, S] or [B, W, S]
    visible = visible.reshape(-1, 1, 1, w, keys.shape[1])  # [1 or B, 1, 1, W, S]
    visible = visible & key_valid.transpose(0, 2, 1)[:, :, None, None, :]  # [B, K, 1, W, S]
    probs = masked_softmax(logits, visible)
    return probs.sum(axis=3).reshape(b, n, -1)  # [B, N, S]


def pallas_fits(q: jax.Array) -> bool:
    """Whether the Pallas kernel takes this query tensor [B, T, N, H]: a power-of-two head dim from 16 (the smallest
    Triton matmul) to 128 (benchmarked on the H100 at 64 and 128), in a floating dtype."""
    h = q.shape[-1]
    return 16 <= h <= 128 and h & (h - 1) == 0 and q.dtype in (jnp.bfloat16, jnp.float16, jnp.float32)


def last_rows(ends: jax.Array, window: int) -> jax.Array:
    """Observation rows = the `window` rows before each end: [B, window] int32, -1 where that would be negative."""
    rows = ends.astype(jnp.int32)[:, None] - window + jnp.arange(window, dtype=jnp.int32)
    return jnp.where(rows >= 0, rows, -1)


def scores_of_rows(q, rows, keys, key_valid, q_slots, key_bias=None):
    """`observation_scores` of the rows given as indices into q's T axis; entries outside [0, T) count for nothing.

    q [B, T, N, H]; rows [B, W]; keys [B, S, K, H]; key_valid [B, S, K]; q_slots [T] the slots of q's rows.
    """
    t = q.shape[1]
    inside = jnp.clip(rows, 0, t - 1)
    rows_q = jnp.take_along_axis(q, inside[:, :, None, None], axis=1)  # [B, W, N, H]
    slots = jnp.where((rows >= 0) & (rows < t), q_slots[inside], -1)  # slot -1 sees no key
    return observation_scores(rows_q, keys, key_valid, slots, key_bias)


HALF = (jnp.bfloat16, jnp.float16)  # a tuple: dtypes compare equal to these types but hash differently


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One implementation behind `fresh_attention` and what it takes.

    run(q, k, v, token_valid, lengths, score_rows, platform): (out, scores or None) for an attention kernel, scores for
    a score kernel. backends: the settings that may pick it; platforms: JAX default backends it runs on; dtypes:
    query dtypes (empty: any); scores: an attention kernel that also gives the observation scores, picked only when
    they are asked for; fits(q): the shapes it handles; usable(platform): that it compiles there (checked once).
    """

    name: str
    run: Callable
    backends: frozenset
    platforms: frozenset = frozenset({"cpu", "gpu", "tpu"})
    dtypes: tuple = ()
    scores: bool = False
    fits: Callable = lambda q: True
    usable: Callable = lambda platform: True

    def takes(self, backend: str, q: jax.Array, platform: str) -> bool:
        return (
            backend in self.backends
            and platform in self.platforms
            and (not self.dtypes or q.dtype in self.dtypes)
            and self.fits(q)
            and self.usable(platform)
        )


def _pallas_attention(q, k, v, token_valid, lengths, score_rows, platform):
    from pcomp_jax.kernels.triton import chunk_attention  # Pallas imports stay off the default path

    out, _, scores = chunk_attention(q, k, v, lengths, score_rows, per_query_head=True, interpret=platform != "gpu")
    return out, scores


def _triton_scores(q, k, v, token_valid, lengths, score_rows, platform):
    from pcomp_jax.kernels.triton import chunk_scores

    return chunk_scores(q, k, lengths, score_rows, per_query_head=True)


def _key_valid(k, token_valid):
    return jnp.broadcast_to(token_valid[:, :, None], k.shape[:3])  # [B, T, K]


ALL = frozenset(Backend) - {Backend.AUTO}
ATTENTION_KERNELS = (
    Kernel(  # our attention kernel with its companion score launch (interpret mode off the GPU)
        "pallas",
        _pallas_attention,
        backends=frozenset({Backend.PALLAS}),
        platforms=frozenset({"gpu", "cpu"}),
        scores=True,
        fits=pallas_fits,
        usable=lambda platform: platform != "gpu" or score_kernel_usable(),
    ),
    Kernel(
        "cudnn",
        lambda q, k, v, valid, lengths, rows, platform: (cudnn_causal_attention(q, k, v, lengths), None),
        backends=frozenset({Backend.CUDNN, Backend.PALLAS}),
        platforms=frozenset({"gpu"}),
        dtypes=HALF,
    ),
    Kernel(
        "reference",
        lambda q, k, v, valid, lengths, rows, platform: (causal_attention(q, k, v, _key_valid(k, valid)), None),
        backends=ALL,
    ),
)
SCORE_KERNELS = (
    Kernel(  # our score kernel beside cuDNN's attention
        "triton scores",
        _triton_scores,
        backends=frozenset({Backend.CUDNN, Backend.PALLAS}),
        platforms=frozenset({"gpu"}),
        dtypes=HALF,
        fits=pallas_fits,
        usable=lambda platform: score_kernel_usable(),
    ),
    Kernel(
        "jnp scores",
        lambda q, k, v, valid, lengths, rows, platform: scores_of_rows(
            q, rows, k, _key_valid(k, valid), jnp.arange(q.shape[1])
        ),
        backends=ALL,
    ),
)


def fresh_attention(q, k, v, token_valid, backend: str, score_rows=None):
    """Causal attention over new right-padded tokens (query t at slot t), with observation scores when asked.

    q [B, T, N, H]; k, v [B, T, K, H]; token_valid [B, T], a prefix of True per row (right padding: the cuDNN and
    Pallas paths read only its count); score_rows [B, W] indices into T (others ignored) or None; backend: a
    resolved backend (`resolve_backend`). Returns out [B, T, N, H], zeros on padding rows whatever the kernel, and
    scores [B, N, T] float32 (None without rows). The kernels are chosen as the module docstring says.
    """
    lengths = token_valid.sum(-1).astype(jnp.int32)
    platform = jax.default_backend()
    kernel, scorer = choose_kernels(backend, q, score_rows is not None, platform)
    out, scores = kernel.run(q, k, v, token_valid, lengths, score_rows, platform)
    out = jnp.where(token_valid[:, :, None, None], out, 0).astype(out.dtype)
    if scorer is not None:
        scores = scorer.run(q, k, v, token_valid, lengths, score_rows, platform)
    return out, scores


def choose_kernels(backend: str, q: jax.Array, wants_scores: bool, platform: str) -> tuple[Kernel, Kernel | None]:
    """The attention kernel for this call and, when scores are wanted and it gives none, the score kernel."""
    kernel = next(x for x in ATTENTION_KERNELS if (wants_scores or not x.scores) and x.takes(backend, q, platform))
    if not wants_scores or kernel.scores:
        return kernel, None
    return kernel, next(x for x in SCORE_KERNELS if x.takes(backend, q, platform))


def attend(q, k, v, layer, layer_cache, step):
    """The model-independent half of an attention layer: write the new keys and values into the layer's cache,
    filter the cache's keys (`step.key_filter`, e.g. calibration), and attend with the kernel the step's backend
    picks (`fresh_attention` over a fresh cache, `decode_attention` for one token, `reference_attention` otherwise),
    with the observation scores when `step.score_rows` asks for them.

    q [B, T, N, H] and k, v [B, T, K, H] after RoPE; layer_cache (k, v [B, S, K', H], valid [B, S, K']), where K' is
    K, or N for a cache that stores the KV heads repeated per query head; step: the call's `model._Step`.
    Returns (out [B, T, N, H], the updated layer cache, scores [B, N, S or T] or None).
    """
    b, t = q.shape[:2]
    ck, cv, cvalid = layer_cache  # [B, S, K', H], [B, S, K', H], [B, S, K']
    if ck.shape[2] != k.shape[2]:  # a cache that stores KV heads repeated per query head (K' = N)
        repeat = ck.shape[2] // k.shape[2]
        k, v = jnp.repeat(k, repeat, axis=2), jnp.repeat(v, repeat, axis=2)
    new_valid = jnp.broadcast_to(step.token_valid[:, :, None], (b, t, ck.shape[2]))  # [B, T, K']
    ck = lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, step.end, 0, 0))
    cv = lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, step.end, 0, 0))
    cvalid = lax.dynamic_update_slice(cvalid, new_valid, (0, step.end, 0))
    if step.key_filter is not None:
        cvalid = step.key_filter(layer, q, step.token_valid, step.end + jnp.arange(t), ck, cvalid)

    if step.fresh:  # a fresh cache holds exactly the new tokens, one entry per KV head
        out, scores = fresh_attention(q, k, v, step.token_valid, step.backend, step.score_rows)
        return out, (ck, cv, cvalid), scores
    q_slots = step.end + jnp.arange(t)
    if t == 1:  # a decode step: read the cache once, in place
        out = decode_attention(q, ck, cv, step.end, cvalid, step.key_bias)
    else:
        out = reference_attention(q, ck, cv, q_slots, cvalid, key_bias=step.key_bias)
    scores = None
    if step.score_rows is not None:
        scores = scores_of_rows(q, step.score_rows, ck, cvalid, q_slots, step.key_bias)
    return out, (ck, cv, cvalid), scores
