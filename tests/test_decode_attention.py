"""The decode step's attention (one new token over a cache, read in place) against the jnp reference."""

import jax.numpy as jnp
import numpy as np
import pytest

from pcomp_jax.attention import decode_attention, reference_attention


@pytest.mark.parametrize("shape", [(1, 50, 4, 2, 16), (2, 37, 9, 3, 8), (1, 64, 8, 8, 16), (3, 129, 8, 1, 32)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_decode_attention_equals_reference(shape, dtype):
    b, s, n, kh, h = shape
    rng = np.random.default_rng(sum(shape))
    q, k, v = (jnp.asarray(rng.normal(size=x), dtype) for x in ((b, 1, n, h), (b, s, kh, h), (b, s, kh, h)))
    valid = jnp.asarray(rng.random((b, s, kh)) > 0.3)
    for slot in (0, s // 2, s - 1):
        ref = reference_attention(q, k, v, jnp.array([slot]), valid)
        got = decode_attention(q, k, v, jnp.int32(slot), valid)
        assert got.shape == ref.shape and got.dtype == ref.dtype
        tol = 1e-5 if dtype == jnp.float32 else 2e-2
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32), atol=tol, rtol=tol)


def test_decode_attention_with_nothing_visible_is_zero():
    q = jnp.ones((1, 1, 4, 8))
    k = v = jnp.ones((1, 10, 2, 8))
    valid = jnp.zeros((1, 10, 2), bool).at[0, 5:, 0].set(True)  # head 0 sees only slots 5+, head 1 nothing
    out = decode_attention(q, k, v, jnp.int32(3), valid)
    assert not bool(jnp.any(out)) and not bool(jnp.any(jnp.isnan(out)))


def test_decode_loop_writes_its_cache_in_place():
    """`decode_in_place` donates the cache and returns it: the compiled loop holds no copy of a cache buffer (before
    the donation it copied the whole cache once per call), the caller's arrays are consumed, and the tokens equal
    those of `decode` on a copy. In bf16, the dtype of the GPU runs and of `make demo` (the CPU's float32 program
    still copies the cache inside its loop)."""
    import re

    import jax

    from pcomp_jax.bench.shapes import SHAPES
    from pcomp_jax.cache import KVCache
    from pcomp_jax.decoding import Sampling, decode, decode_in_place
    from pcomp_jax.model import init_params

    c = SHAPES["tiny"]
    params = init_params(c, jax.random.key(0), jnp.bfloat16)
    rng = np.random.default_rng(0)
    slots, end = 96, 40
    shape = (c.num_layers, 1, slots, c.num_kv_heads, c.head_dim)
    k, v = (jnp.asarray(rng.normal(size=shape), jnp.bfloat16) for _ in range(2))
    valid = jnp.zeros(shape[:-1], bool).at[:, :, :end].set(True)
    fresh = lambda: KVCache.from_stacked(k, v, valid, end)  # noqa: E731
    logits = jnp.asarray(rng.normal(size=(1, c.vocab_size)), jnp.float32)
    position = jnp.asarray([end], jnp.int32)
    options = {"sampling": Sampling(max_new_tokens=8, min_new_tokens=8), "eos_ids": (2,)}
    cache = fresh()
    hlo = decode_in_place.lower(params, c, cache, logits, position, **options).compile().as_text()
    cache_copies = [ln for ln in hlo.splitlines() if re.search(rf"= \S+\[1,{slots},[^=]* copy\(", ln)]
    assert not cache_copies, cache_copies[:2]
    tokens, counts, out = decode_in_place(params, c, cache, logits, position, **options)
    assert cache.k[0].is_deleted() and not out.k[0].is_deleted()
    assert bool(jnp.all(out.valid[0][0, : end + 8])) and not bool(jnp.any(out.valid[0][0, end + 8 :]))
    ref, ref_counts = decode(params, c, fresh(), logits, position, **options)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(ref))
    np.testing.assert_array_equal(np.asarray(counts), np.asarray(ref_counts))
