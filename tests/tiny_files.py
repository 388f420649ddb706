"""Tiny checkpoints on disk, built offline: HF model directories and llama.cpp GGUF files (for converter tests)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import torch
from hf_tiny import tiny_hf_model, tiny_tokenizer


def save_tiny_hf(path: Path, kind: str = "llama", fmt: str = "safetensors", **model_kwargs):
    """Save a `tiny_hf_model(kind, **model_kwargs)` and the tiny tokenizer into `path`; return the HF model.

    fmt: "safetensors", "sharded-safetensors" (HF's own sharding, ~20 KB shards), "bin" or "sharded-bin" (written
    here as HF's legacy `pytorch_model*.bin` layout: transformers 5 only writes safetensors).
    """
    model = tiny_hf_model(kind, **model_kwargs)
    if fmt in ("safetensors", "sharded-safetensors"):
        model.save_pretrained(path, **({"max_shard_size": "20KB"} if fmt.startswith("sharded") else {}))
    elif fmt in ("bin", "sharded-bin"):
        model.config.dtype = next(model.parameters()).dtype  # save_pretrained records it; do the same
        model.config.save_pretrained(path)
        write_bin(model.state_dict(), path, shards=3 if fmt.startswith("sharded") else 1)
    else:
        raise ValueError(fmt)
    tiny_tokenizer().save_pretrained(path)
    return model


def write_bin(state_dict: dict, path: Path, shards: int = 1) -> None:
    """torch.save `state_dict` as pytorch_model.bin, or as `shards` files plus pytorch_model.bin.index.json."""
    path.mkdir(parents=True, exist_ok=True)
    if shards == 1:
        torch.save(dict(state_dict), path / "pytorch_model.bin")
        return
    names = list(state_dict)
    weight_map = {}
    for s in range(shards):
        file = f"pytorch_model-{s + 1:05d}-of-{shards:05d}.bin"
        part = {n: state_dict[n].clone() for n in names[s::shards]}
        torch.save(part, path / file)
        weight_map.update(dict.fromkeys(part, file))
    index = {
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state_dict.values())},
        "weight_map": weight_map,
    }
    (path / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to attn_q / attn_k rows (LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_GGUF_GLOBAL = {
    "model.embed_tokens.weight": "token_embd",
    "model.norm.weight": "output_norm",
    "lm_head.weight": "output",
}
_GGUF_LAYER = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf: str) -> str:
    base, kind = hf.rsplit(".", 1)
    if base + "." + kind in _GGUF_GLOBAL:
        return f"{_GGUF_GLOBAL[hf]}.{kind}"
    _, _, i, rest = base.split(".", 3)
    return f"blk.{i}.{_GGUF_LAYER[rest]}.{kind}"


def write_tiny_gguf(
    model,
    path: Path,
    qtype: gguf.GGMLQuantizationType | None = None,
    arch: str = "llama",
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write an HF Llama model as llama.cpp would (permuted q/k rows, byte-level BPE tokenizer metadata).

    qtype quantizes the 2-D weights (e.g. Q8_0); norms stay F32 as in llama.cpp. `extra` adds raw tensors.
    """
    c, tok = model.config, tiny_tokenizer()
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_key_length(c.head_dim)  # llama.cpp writes these when head_dim != hidden / heads
    w.add_value_length(c.head_dim)
    w.add_rope_dimension_count(c.head_dim)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    vocab = tok.backend_tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    tokens += [f"[PAD{i}]" for i in range(len(tokens), c.vocab_size)]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in tok.all_special_tokens else 1 for t in tokens])
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(c.bos_token_id)
    w.add_eos_token_id(c.eos_token_id)
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        a = t.detach().float().numpy()
        g = gguf_name(name)
        if ".attn_q." in g:
            a = llama_cpp_permute(a, c.num_attention_heads)
        elif ".attn_k." in g:
            a = llama_cpp_permute(a, c.num_key_value_heads)
        if qtype is not None and a.ndim == 2:
            w.add_tensor(g, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(g, a)
    for name, a in (extra or {}).items():
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
