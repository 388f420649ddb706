"""Our token eviction keeps exactly the tokens NVIDIA kvpress's SnapKV keeps, on the real SmolLM2.

`tests/data/kvpress_snapkv_smollm2.npz` was written by `benchmarks/kvpress_compare.py compare --export` (kvpress 0.5.5
in its own venv, transformers 5.2, torch 2.13 CPU): a 2K-token needle-in-a-haystack prompt (chat template, the
`retrieval` template) and, per layer and KV head, the 25% of its context tokens that kvpress's SnapKV scores rank
highest (window 32 rows, average pooling of width 5, group mean). Configured the same way (`pool="avg"`), ours must
keep the same tokens (>= 95% overlap per layer and head; 100% was measured)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcomp_jax import load
from pcomp_jax.attention import last_rows
from pcomp_jax.model import forward as eager_forward
from pcomp_jax.parallelcomp.config import TokenEviction
from pcomp_jax.parallelcomp.eviction import select_tokens

DATA = Path(__file__).parent / "data" / "kvpress_snapkv_smollm2.npz"
WINDOW, KERNEL = 32, 5

pytestmark = pytest.mark.slow
forward = jax.jit(eager_forward, static_argnums=1, static_argnames=("attention_backend",))


def test_kept_tokens_equal_kvpress_snapkv(smollm2_checkpoint):
    ref = np.load(DATA)
    ids, (context_len, bos_len, cap), want = ref["ids"], ref["meta"], ref["kvpress"]
    model = load(smollm2_checkpoint)
    t = len(ids)
    out, cache = forward(
        model.params,
        model.config,
        jnp.asarray(ids)[None],
        jnp.arange(t)[None],
        score_rows=last_rows(jnp.asarray([t]), WINDOW),
        attention_backend="reference",
    )

    def kept(**pooling):
        eviction = TokenEviction(capacity=int(cap), window=WINDOW, **pooling)
        idx, _ = select_tokens(
            out.scores[:, 0],
            cache.stacked()[2][:, 0],
            jnp.int32(context_len),
            bos_len=int(bos_len),
            context_slots=int(context_len),
            eviction=eviction,
        )
        return np.asarray(idx)

    got = kept(pool_kernel=KERNEL, pool="avg")
    assert got.shape == want.shape == (model.config.num_layers, model.config.num_kv_heads, cap)
    overlap = [len(set(a) & set(b)) / cap for a, b in zip(got.reshape(-1, cap), want.reshape(-1, cap), strict=True)]
    assert min(overlap) >= 0.95, f"worst layer/head overlap {min(overlap):.3f}"
    # the default max-pooling keeps a different set: the test can tell the two apart
    assert (kept(pool_kernel=7) != want).any()


def test_avg_pool_is_kvpress_avg_pool1d():
    """avg_pool equals torch's avg_pool1d(kernel, padding=kernel // 2, stride 1) (zeros counted at the ends)."""
    from pcomp_jax.parallelcomp.scoring import avg_pool

    x = np.random.default_rng(0).random((2, 3, 17)).astype(np.float32)
    padded = np.pad(x, [(0, 0), (0, 0), (2, 2)])
    want = np.stack([padded[..., i : i + 5].mean(-1) for i in range(17)], -1)
    got = np.asarray(avg_pool(jnp.asarray(x), jnp.ones(x.shape, bool), 5))
    np.testing.assert_allclose(got, want, rtol=1e-6)
