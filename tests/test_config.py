"""Config parsing from HF config.json dicts, refusal of unsupported fields, and shapes of big configs."""

from __future__ import annotations

import math

import jax
import pytest

from pcomp_jax.config import ConfigError, LlamaConfig, RopeScaling, from_hf_config
from pcomp_jax.model import init_params

# Meta-Llama-3.1-8B config.json as published (transformers 4 layout)
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
}


def _count(config: LlamaConfig) -> int:
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


def test_llama3_8b_parameter_count_without_allocating():
    hf = {k: v for k, v in LLAMA31_8B.items() if k != "rope_scaling"} | {
        "max_position_embeddings": 8192,
        "eos_token_id": 128009,
    }
    assert _count(from_hf_config(hf)) == 8_030_261_248


def test_llama31_rope_scaling_and_eos_list():
    c = from_hf_config(LLAMA31_8B)
    assert c.rope_scaling == RopeScaling("llama3", 8.0, 8192, 1.0, 4.0)
    assert c.trained_context == 8192 and c.max_position_embeddings == 131072
    assert c.eos_token_ids == (128001, 128008, 128009)
    assert c.group_size == 4 and c.head_dim == 128


def test_transformers5_rope_parameters_layout():
    hf = {k: v for k, v in LLAMA31_8B.items() if k not in ("rope_scaling", "rope_theta")}
    hf["rope_parameters"] = {**LLAMA31_8B["rope_scaling"], "rope_theta": 500000.0}
    assert from_hf_config(hf) == from_hf_config(LLAMA31_8B)


def test_qwen2_has_qkv_bias_only():
    hf = {**LLAMA31_8B, "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "use_sliding_window": False}
    hf.pop("rope_scaling")
    c = from_hf_config(hf)
    assert c.qkv_bias and not c.o_bias


def test_config_round_trip(tmp_path):
    c = from_hf_config(LLAMA31_8B)
    c.save(tmp_path / "c.json")
    assert LlamaConfig.load(tmp_path / "c.json") == c


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "unsupported architecture.*gpt2"),
        ({"architectures": ["LlamaForSequenceClassification"]}, "unsupported architecture"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"mlp_bias": True}, "mlp_bias=True"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_type='yarn'"),
        ({"num_key_value_heads": 5}, "multiple of num_kv_heads"),
    ],
)
def test_unsupported_configs_are_refused_by_name(change, message):
    with pytest.raises(ConfigError, match=message):
        from_hf_config({**LLAMA31_8B, **change})
