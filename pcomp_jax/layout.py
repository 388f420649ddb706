"""The two param layouts: stored (checkpoints, the converter, HF mapping) and runtime (what `forward` takes).

Stored, one array per weight kind with the layers stacked on a leading axis (HF's names and matrices, transposed):

    embed/embedding                      [V, D]
    layers/attn_norm/scale               [L, D]
    layers/attn/{q,k,v}_proj/kernel      [L, D, N*H | K*H | K*H]   (+ bias [L, ...] when qkv_bias)
    layers/attn/o_proj/kernel            [L, N*H, D]           (+ bias [L, D] when o_bias)
    layers/mlp_norm/scale                [L, D]
    layers/mlp/{gate,up}_proj/kernel     [L, D, F]
    layers/mlp/down_proj/kernel          [L, F, D]
    final_norm/scale                     [D]
    lm_head/kernel                       [D, V]   (absent when embeddings are tied)

Runtime, one subtree per layer (`layers_0` ... `layers_{L-1}`) and the projections that read the same input fused:

    layers_i/attn/qkv_proj/kernel        [D, K, G + 2, H]  per KV head: its G query heads, then its key and value
                                         (+ bias [K, G + 2, H] when qkv_bias)
    layers_i/attn/o_proj/kernel          [N*H, D]          (+ bias [D])
    layers_i/mlp/gate_up_proj/kernel     [D, 2, F]
    layers_i/mlp/down_proj/kernel        [F, D]
    layers_i/{attn_norm,mlp_norm}/scale  [D]
    embed, final_norm, lm_head           as stored

Why: a single-token decode step is bound by reading the weights, and XLA copies any slice of a stacked weight into a
buffer of its own before a cuBLAS matmul reads it (one more write and read of every weight per step: 11.5 ms against
4.9 ms per step for the Llama-3-8B shape on an H200, `benchmarks/decode_probe.py`). Per-layer arrays are read in
place; fusing q/k/v and gate/up halves the matmul launches. Grouping by KV head keeps every fused axis shardable
over heads.
"""

from __future__ import annotations

import jax
import numpy as np

from pcomp_jax.config import LlamaConfig

Params = dict


def stored_shapes(config: LlamaConfig) -> dict:
    """Shape of every stored param of `config` (nested dicts of tuples)."""
    c = config
    d, nh, kh, f = c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size
    lay = lambda *s: (c.num_layers, *s)
    attn = {name: {"kernel": lay(d, width)} for name, width in (("q_proj", nh), ("k_proj", kh), ("v_proj", kh))}
    if c.qkv_bias:
        for name, width in (("q_proj", nh), ("k_proj", kh), ("v_proj", kh)):
            attn[name]["bias"] = lay(width)
    attn["o_proj"] = {"kernel": lay(nh, d), **({"bias": lay(d)} if c.o_bias else {})}
    shapes = {
        "embed": {"embedding": (c.vocab_size, d)},
        "layers": {
            "attn_norm": {"scale": lay(d)},
            "attn": attn,
            "mlp_norm": {"scale": lay(d)},
            "mlp": {
                "gate_proj": {"kernel": lay(d, f)},
                "up_proj": {"kernel": lay(d, f)},
                "down_proj": {"kernel": lay(f, d)},
            },
        },
        "final_norm": {"scale": (d,)},
    }
    if not c.tie_word_embeddings:
        shapes["lm_head"] = {"kernel": (d, c.vocab_size)}
    return shapes


def _host(x) -> np.ndarray:
    return np.asarray(jax.device_get(x))


def to_runtime(stored: Params, config: LlamaConfig, put=None) -> Params:
    """The runtime tree of a stored one. The stored arrays are brought to the host first and the runtime tree is
    built there one layer at a time; `put(array, path)` places each finished leaf (path: its keys in the runtime
    tree; e.g. a cast and a move to the device, or onto a mesh by the leaf's sharding), so the device never holds
    both layouts of more than one layer. Without `put` the leaves stay numpy arrays."""
    c = config
    put = put or (lambda x, path: x)
    stored = jax.device_get(stored)
    lay = stored["layers"]
    out = {
        k: jax.tree_util.tree_map_with_path(lambda p, x, k=k: put(np.asarray(x), (k, *_keys(p))), v)
        for k, v in stored.items()
        if k != "layers"
    }
    for i in range(c.num_layers):
        name = f"layers_{i}"
        layer = _runtime_layer({k: _layer(v, i) for k, v in lay.items()}, c)
        out[name] = jax.tree_util.tree_map_with_path(lambda p, x, name=name: put(x, (name, *_keys(p))), layer)
    return out


def _keys(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", k)) for k in path)


def to_stored(params: Params, config: LlamaConfig) -> Params:
    """The stored tree of a runtime one, as numpy arrays (the inverse of `to_runtime`)."""
    c = config
    g = c.num_heads // c.num_kv_heads
    layers = [jax.tree.map(_host, params[f"layers_{i}"]) for i in range(c.num_layers)]
    stack = lambda fn: np.stack([fn(p) for p in layers])
    heads = lambda x, sl: x[..., sl, :].reshape(*x.shape[:-3], -1)  # [..., K, G + 2, H] -> [..., K * heads * H]
    parts = ("kernel", "bias") if c.qkv_bias else ("kernel",)
    attn = {
        name: {part: stack(lambda p, part=part, sl=sl: heads(p["attn"]["qkv_proj"][part], sl)) for part in parts}
        for name, sl in (("q_proj", slice(0, g)), ("k_proj", slice(g, g + 1)), ("v_proj", slice(g + 1, g + 2)))
    }
    o_parts = ("kernel", "bias") if c.o_bias else ("kernel",)
    attn["o_proj"] = {part: stack(lambda p, part=part: p["attn"]["o_proj"][part]) for part in o_parts}
    out = {k: jax.tree.map(_host, v) for k, v in params.items() if not k.startswith("layers_")}
    out["layers"] = {
        "attn_norm": {"scale": stack(lambda p: p["attn_norm"]["scale"])},
        "attn": attn,
        "mlp_norm": {"scale": stack(lambda p: p["mlp_norm"]["scale"])},
        "mlp": {
            "gate_proj": {"kernel": stack(lambda p: p["mlp"]["gate_up_proj"]["kernel"][:, 0])},
            "up_proj": {"kernel": stack(lambda p: p["mlp"]["gate_up_proj"]["kernel"][:, 1])},
            "down_proj": {"kernel": stack(lambda p: p["mlp"]["down_proj"]["kernel"])},
        },
    }
    return out


def _layer(tree, i: int):
    """Layer i of a stacked subtree."""
    return jax.tree.map(lambda x: np.asarray(x[i]), tree)


def _runtime_layer(p: Params, c: LlamaConfig) -> Params:
    """One layer's stored arrays (stack axis removed) in the runtime layout."""
    kh, g, h = c.num_kv_heads, c.num_heads // c.num_kv_heads, c.head_dim
    a = p["attn"]

    def qkv(part, lead):  # q [lead..., N*H], k/v [lead..., K*H] -> [lead..., K, G + 2, H]
        q = a["q_proj"][part].reshape(*lead, kh, g, h)
        k = a["k_proj"][part].reshape(*lead, kh, 1, h)
        v = a["v_proj"][part].reshape(*lead, kh, 1, h)
        return np.concatenate([q, k, v], axis=-2)

    attn = {"qkv_proj": {"kernel": qkv("kernel", (c.hidden_size,))}}
    if c.qkv_bias:
        attn["qkv_proj"]["bias"] = qkv("bias", ())
    attn["o_proj"] = dict(a["o_proj"])
    m = p["mlp"]
    return {
        "attn_norm": {"scale": p["attn_norm"]["scale"]},
        "attn": attn,
        "mlp_norm": {"scale": p["mlp_norm"]["scale"]},
        "mlp": {
            "gate_up_proj": {"kernel": np.stack([m["gate_proj"]["kernel"], m["up_proj"]["kernel"]], axis=1)},
            "down_proj": {"kernel": m["down_proj"]["kernel"]},
        },
    }
