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
