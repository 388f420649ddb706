"""Run by test_sharding.py in a process of its own with N virtual CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N): ParallelComp on one device and over `chunks` meshes of every
size up to N, printing one JSON line of results per mesh."""

from __future__ import annotations

import json
import sys

import jax
import numpy as np
from hf_tiny import _our_config, params_from_hf, tiny_hf_model, tiny_tokenizer

from pcomp_jax import Model, ParallelCompConfig, Sampling, TokenEviction, generate
from pcomp_jax.parallelcomp.prompts import PromptTemplate
from pcomp_jax.sharding import parse_mesh, replicate

WORDS = "alpha beta gamma delta river stone cloud paper garden silver window orange market yellow music".split()


def main() -> None:
    hf = tiny_hf_model("llama", heads=8, kv_heads=4, layers=2)
    params, config, tok = params_from_hf(hf), _our_config(hf), tiny_tokenizer(bos=True)
    context = " ".join(np.random.default_rng(3).choice(WORDS, 160))
    template = PromptTemplate(prefix="Read: ", suffix=" Q: {question} A:")
    for name, extra in (("plain", {}), ("evict", {"eviction": TokenEviction(capacity=10, window=4)})):
        cfg = ParallelCompConfig(
            chunk_tokens=48, keep_chunks=2, chunk_batch=3, chat=False, sampling=Sampling(max_new_tokens=6), **extra
        )
        for spec in [None] + [f"chunks={n}" for n in range(2, len(jax.devices()) + 1)]:
            mesh = parse_mesh(spec)
            model = Model(replicate(params, mesh), config, tok, attention_backend="reference", mesh=mesh)
            r = generate(model, context, "what is the key?", cfg, template=template, progress=False)
            keys = ("kept_chunks", "chunk_scores", "num_chunks", "cache_tokens_per_layer")
            print(json.dumps({"config": name, "mesh": spec, "tokens": r.tokens, **{k: r.stats[k] for k in keys}}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
