"""GPU check: the Pallas score kernel's compile probe succeeds here, and token eviction through the pipeline gives
the same scores with the kernel as with the jnp pass (random SmolLM2-shaped weights).

    python benchmarks/score_kernel_probe.py
"""

import jax
import numpy as np

from pcomp_jax import attention
from pcomp_jax.bench.shapes import SHAPES
from pcomp_jax.decoding import Sampling
from pcomp_jax.model import init_params
from pcomp_jax.parallelcomp.config import ParallelCompConfig, TokenEviction
from pcomp_jax.parallelcomp.pipeline import generate_from_ids
from pcomp_jax.pretrained import Model

print("device:", jax.devices()[0].device_kind, "jax", jax.__version__)
print("score kernel usable:", attention.score_kernel_usable())
q = jax.numpy.zeros((1, 16, 9, 64), jax.numpy.bfloat16)  # a SmolLM2-shaped query
for backend in ("cudnn", "pallas"):
    chosen = attention.choose_kernels(attention.resolve_backend(backend), q, True, jax.default_backend())
    print(f"{backend} with scores runs:", " + ".join(k.name for k in chosen if k is not None))
c = SHAPES["smollm2"]
params = jax.jit(lambda k: init_params(c, k, jax.numpy.bfloat16))(jax.random.key(0))
rng = np.random.default_rng(0)
context, question = rng.integers(10, c.vocab_size, 16384).tolist(), rng.integers(10, c.vocab_size, 20).tolist()
config = ParallelCompConfig(chunk_tokens=2048, eviction=TokenEviction(capacity=256), sampling=Sampling(8, 8))
results = {}
for label, usable in (("kernel", True), ("jnp pass", False)):
    attention._score_kernel_ok = usable
    model = Model(params=params, config=c, tokenizer=None, attention_backend="cudnn")
    results[label] = generate_from_ids(model, context, question, config, progress=False)
    print(label, "kept", results[label].stats["kept_chunks"], "prefill s", results[label].stats["prefill_seconds"])
same = results["kernel"].stats["kept_chunks"] == results["jnp pass"].stats["kept_chunks"]
print("same kept chunks:", same, "same tokens:", results["kernel"].tokens == results["jnp pass"].tokens)
