"""Tiny random HF models and a tiny tokenizer, built offline, for parity tests."""

from __future__ import annotations

import functools

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

VOCAB = 320
CORPUS = [
    "The capital of France is Paris. The quick brown fox jumps over the lazy dog.",
    "Long contexts are split into chunks that are encoded in parallel with reused positions.",
    "What is the pass key? The pass key is 71432. Remember it.",
]


@functools.cache
def tiny_tokenizer(bos: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with <s>=1 and </s>=2, trained on a few sentences; `bos`: it prepends <s>."""
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = __import__("tokenizers").decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator(CORPUS * 4, trainer)
    if bos:
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tiny_hf_model(
    kind: str = "llama",
    kv_heads: int = 2,
    heads: int = 4,
    bias: bool = False,
    tied: bool = False,
    rope_parameters: dict | None = None,
    layers: int = 2,
    seed: int = 0,
    dtype=torch.float32,
):
    """A random `LlamaForCausalLM` / `Qwen2ForCausalLM` (eager attention) with wide weights, so logits are not
    near-tied and greedy argmax is stable under float32 rounding."""
    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=16,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=0.2,
    )
    if rope_parameters is not None:
        common["rope_parameters"] = rope_parameters
    torch.manual_seed(seed)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(attention_bias=bias, **common))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(use_sliding_window=False, **common))
    else:
        raise ValueError(kind)
    with torch.no_grad():  # norms start at 1; randomise them so parity covers their scales too
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.config._attn_implementation = "eager"
    return model.to(dtype).eval()


def stored_params_from_hf(model) -> dict:
    """Our stored param tree from an in-memory HF model (float32 numpy), by the converter's name mapping."""
    from pcomp_jax.convert.mapping import params_from_state_dict

    return params_from_state_dict(
        {k: v.detach().float().numpy() for k, v in model.state_dict().items()}, _our_config(model)
    )


def params_from_hf(model) -> dict:
    """The runtime param tree (what `forward` takes) of an in-memory HF model."""
    from pcomp_jax.layout import to_runtime

    return to_runtime(stored_params_from_hf(model), _our_config(model))


def _our_config(model):
    from pcomp_jax.config import from_hf_config

    return from_hf_config(model.config.to_dict())


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def assert_params_equal_hf(params, hf_state, layers, tol=1e-6):
    """Our params (numpy) against an HF state dict {name: torch tensor}, transposing Linear weights."""
    hf = lambda name: hf_state[name].detach().float().numpy()
    ours = lambda a: np.asarray(a, np.float32)
    assert max_diff(ours(params["embed"]["embedding"]), hf("model.embed_tokens.weight")) <= tol
    assert max_diff(ours(params["final_norm"]["scale"]), hf("model.norm.weight")) <= tol
    lp = params["layers"]
    for i in layers:
        for p in "qkvo":
            got = ours(lp["attn"][f"{p}_proj"]["kernel"][i])
            assert max_diff(got, hf(f"model.layers.{i}.self_attn.{p}_proj.weight").T) <= tol, (i, p)
        for p in ("gate", "up", "down"):
            got = ours(lp["mlp"][f"{p}_proj"]["kernel"][i])
            assert max_diff(got, hf(f"model.layers.{i}.mlp.{p}_proj.weight").T) <= tol, (i, p)
        for ours_name, hf_name in (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")):
            got = ours(lp[ours_name]["scale"][i])
            assert max_diff(got, hf(f"model.layers.{i}.{hf_name}.weight")) <= tol, (i, ours_name)
