"""Model configuration for the Llama family (Llama 2/3/3.1, Qwen2/2.5, SmolLM2).

One frozen dataclass describes every supported model. `from_hf_config` builds it from an HF `config.json` dict
(transformers 4 layout with `rope_theta`/`rope_scaling`, or transformers 5 with `rope_parameters`) and refuses
anything it does not implement, naming the field, rather than silently computing a different model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

DEFAULT_ROPE_THETA = 10000.0
SUPPORTED_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


class ConfigError(ValueError):
    """An HF config this library cannot run exactly (unsupported architecture or field value)."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling. `kind` is "linear" (position interpolation) or "llama3" (Llama-3.1 wavelength scaling).

    `original_max_position_embeddings`, `low_freq_factor` and `high_freq_factor` are used by "llama3" only.
    """

    kind: str
    factor: float
    original_max_position_embeddings: int = 8192
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Shape and numerics of a Llama-family decoder. Field names follow HF where one exists."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = DEFAULT_ROPE_THETA
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # q/k/v projection biases (Qwen2, Llama with attention_bias)
    o_bias: bool = False  # output projection bias (Llama with attention_bias; never Qwen2)
    bos_token_id: int | None = 1
    eos_token_ids: tuple[int, ...] = (2,)
    model_type: str = "llama"

    def __post_init__(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for RoPE, got {self.head_dim}")

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA group size G)."""
        return self.num_heads // self.num_kv_heads

    @property
    def trained_context(self) -> int:
        """Context length the model was trained on (before any RoPE scaling extended it)."""
        if self.rope_scaling is not None and self.rope_scaling.kind == "llama3":
            return self.rope_scaling.original_max_position_embeddings
        return self.max_position_embeddings

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LlamaConfig:
        d = dict(d)
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        d["eos_token_ids"] = tuple(d.get("eos_token_ids", ()))
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LlamaConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


# HF fields that change the computation and that we implement only at one value: {field: allowed values}.
_FIXED_FIELDS = {
    "hidden_act": ("silu",),
    "mlp_bias": (False, None),
    "attention_dropout": (0, 0.0, None),
    "pretraining_tp": (1, None),
    "use_sliding_window": (False, None),
}


def _rope_from_hf(hf: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """RoPE base and scaling from either the transformers 4 or the transformers 5 config layout."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    theta = params.get("rope_theta", hf.get("rope_theta", DEFAULT_ROPE_THETA))
    rope = {**scaling, **params}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return float(theta), None
    if kind == "linear":
        return float(theta), RopeScaling(kind="linear", factor=float(rope["factor"]))
    if kind == "llama3":
        return float(theta), RopeScaling(
            kind="llama3",
            factor=float(rope["factor"]),
            original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
            low_freq_factor=float(rope["low_freq_factor"]),
            high_freq_factor=float(rope["high_freq_factor"]),
        )
    raise ConfigError(f"unsupported RoPE scaling rope_type={kind!r} (supported: default, linear, llama3)")


def from_hf_config(hf: dict[str, Any]) -> LlamaConfig:
    """Build a `LlamaConfig` from an HF `config.json` dict, refusing what we do not implement.

    Raises `ConfigError` naming the architecture or field when the model cannot be run exactly.
    """
    model_type = hf.get("model_type")
    archs = hf.get("architectures") or []
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise ConfigError(
            f"unsupported architecture: model_type={model_type!r} architectures={archs} "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES.values())})"
        )
    bad_archs = [a for a in archs if a != SUPPORTED_ARCHITECTURES[model_type]]
    if bad_archs:
        raise ConfigError(f"unsupported architecture {bad_archs} for model_type={model_type!r}")
    for field, allowed in _FIXED_FIELDS.items():
        if field in hf and hf[field] not in allowed:
            raise ConfigError(f"unsupported config field {field}={hf[field]!r} (supported: {allowed})")
    theta, scaling = _rope_from_hf(hf)
    num_heads = int(hf["num_attention_heads"])
    head_dim = hf.get("head_dim") or hf["hidden_size"] // num_heads
    if model_type == "llama":
        qkv_bias = o_bias = bool(hf.get("attention_bias", False))
    else:  # Qwen2 always has q/k/v biases and never an output bias
        qkv_bias, o_bias = True, False
    eos = hf.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
    return LlamaConfig(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        intermediate_size=int(hf["intermediate_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=num_heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
        head_dim=int(head_dim),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        bos_token_id=hf.get("bos_token_id"),
        eos_token_ids=eos_ids,
        model_type=model_type,
    )
