"""Run by test_sharding.py in a process of its own with N virtual CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N): ParallelComp on one device, over `chunks` meshes of every
size up to N, and with tensor-parallel weights (`model=N`, `chunks=2,model=2`), printing one JSON line of results
per mesh; then the relative difference of a plain forward's logits under each model axis, and a batch of documents
on the mixed mesh."""

from __future__ import annotations

import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from hf_tiny import _our_config, params_from_hf, tiny_hf_model, tiny_tokenizer

from pcomp_jax import Model, ParallelCompConfig, Sampling, TokenEviction, forward, generate
from pcomp_jax.parallelcomp.prompts import PromptTemplate
from pcomp_jax.sharding import parse_mesh, shard_params

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
        n = len(jax.devices())
        specs = [None, *(f"chunks={i}" for i in range(2, n + 1)), f"model={n}", "chunks=2,model=2"]
        for spec in specs:
            mesh = parse_mesh(spec)
            model = Model(shard_params(params, mesh), config, tok, attention_backend="reference", mesh=mesh)
            r = generate(model, context, "what is the key?", cfg, template=template, progress=False)
            keys = ("kept_chunks", "chunk_scores", "num_chunks", "cache_tokens_per_layer")
            print(json.dumps({"config": name, "mesh": spec, "tokens": r.tokens, **{k: r.stats[k] for k in keys}}))
    tokens = jnp.asarray(np.random.default_rng(0).integers(3, config.vocab_size, (1, 96)))
    positions = jnp.arange(96)[None]
    ref = forward(params, config, tokens, positions, logits_at=positions)[0].logits
    for spec in ("model=2", f"model={len(jax.devices())}", "chunks=2,model=2"):
        mesh = parse_mesh(spec)
        sharded = shard_params(params, mesh)
        fwd = jax.jit(lambda p: forward(p, config, tokens, positions, logits_at=positions)[0].logits)
        got = fwd(sharded)
        rel = float(jnp.linalg.norm(got - ref) / jnp.linalg.norm(ref))
        split = str(sharded["layers_0"]["attn"]["qkv_proj"]["kernel"].sharding.spec)
        hlo = fwd.lower(sharded).compile().as_text()
        ops = {op: len(re.findall(rf"= \S+ {op}\(", hlo)) for op in ("all-reduce", "all-gather", "all-to-all")}
        print(json.dumps({"logits": spec, "rel": rel, "qkv_spec": split, "collectives": ops}))
    contexts = [context, " ".join(np.random.default_rng(4).choice(WORDS, 90))]
    questions = ["what is the key?", "why?"]
    for spec in (None, "chunks=2,model=2"):
        mesh = parse_mesh(spec)
        model = Model(shard_params(params, mesh), config, tok, attention_backend="reference", mesh=mesh)
        batch = generate(model, contexts, questions, cfg, template=template, progress=False)
        rows = [{"tokens": r.tokens, "kept_chunks": r.stats["kept_chunks"]} for r in batch]
        print(json.dumps({"batch": spec, "rows": rows}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
