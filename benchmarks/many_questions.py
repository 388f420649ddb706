"""Many questions about one document: N separate `generate_from_ids` calls against one `prefill_document_ids` and N
`answer_ids` calls, on random weights of a named shape (the bench's canonical settings), with the answers compared.

    python benchmarks/many_questions.py --model llama3-8b --length 131072 --questions 10 --out many.json
    python benchmarks/many_questions.py --smoke          # tiny shape, CPU

Both sides run their whole workload once first (compiling every shape), then are timed; the table gives wall
seconds, the ratio and whether every answer and kept-chunk list is identical.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from pcomp_jax import ParallelCompConfig, Sampling, answer_ids, generate_from_ids, prefill_document_ids
from pcomp_jax.bench.shapes import SHAPES, random_params
from pcomp_jax.pretrained import Model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="llama3-8b", choices=sorted(SHAPES))
    p.add_argument("--length", type=int, default=131072)
    p.add_argument("--questions", type=int, default=10)
    p.add_argument("--question-tokens", type=int, default=20)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--chunk-tokens", type=int, default=7680)
    p.add_argument("--keep-chunks", type=int, default=3)
    p.add_argument("--out", default=None)
    p.add_argument("--smoke", action="store_true", help="tiny shape, 2K tokens, 3 questions, float32")
    args = p.parse_args()
    dtype = "bfloat16"
    if args.smoke:
        args.model, args.length, args.questions, args.chunk_tokens, args.new_tokens = "tiny", 2048, 3, 256, 4
        dtype = "float32"
    c = SHAPES[args.model]
    model = Model(params=jax.block_until_ready(random_params(c, 0, dtype)), config=c, tokenizer=None)
    rng = np.random.default_rng(args.length)
    context = rng.integers(10, c.vocab_size, args.length).tolist()
    questions = [rng.integers(10, c.vocab_size, args.question_tokens).tolist() for _ in range(args.questions)]
    new = args.new_tokens
    config = ParallelCompConfig(
        chunk_tokens=args.chunk_tokens,
        keep_chunks=args.keep_chunks,
        chat=False,
        sampling=Sampling(max_new_tokens=new, min_new_tokens=new),
    )

    def separate():
        return [generate_from_ids(model, context, q, config, progress=False) for q in questions]

    def staged():
        document = prefill_document_ids(model, context, config, progress=False)
        return document, [answer_ids(model, document, q, progress=False) for q in questions]

    rows = {}
    for name, run in (("separate generate calls", separate), ("one document prefill + answers", staged)):
        run()  # compile every shape
        start = time.perf_counter()
        out = run()
        rows[name] = (time.perf_counter() - start, out)
    sep_s, sep = rows["separate generate calls"]
    st_s, (document, st) = rows["one document prefill + answers"]
    same_tokens = [a.tokens == b.tokens for a, b in zip(sep, st, strict=True)]
    same_kept = [a.stats["kept_chunks"] == b.stats["kept_chunks"] for a, b in zip(sep, st, strict=True)]
    score_diff = max(
        float(np.max(np.abs(np.subtract(a.stats["chunk_scores"], b.stats["chunk_scores"]))))
        for a, b in zip(sep, st, strict=True)
    )
    device = jax.devices()[0]
    head = (
        f"{args.model} ({dtype}), {args.length} context tokens, {args.questions} questions of "
        f"{args.question_tokens} tokens, {new} new tokens each, chunk_tokens {args.chunk_tokens}, keep "
        f"{args.keep_chunks}; {device.device_kind}, jax {jax.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    answers = np.mean([r.stats["prefill_seconds"] + r.stats["decode_seconds"] for r in st])
    print(head)
    print("| how | wall s | per question s |\n|---|---|---|")
    print(f"| {args.questions} separate generate calls | {sep_s:.3f} | {sep_s / args.questions:.3f} |")
    print(
        f"| one document prefill ({document.stats['document_seconds']:.3f} s) + {args.questions} answers "
        f"| {st_s:.3f} | {answers:.3f} |"
    )
    print(
        f"speed-up {sep_s / st_s:.2f}x; identical answers {sum(same_tokens)}/{len(same_tokens)}, identical kept "
        f"chunks {sum(same_kept)}/{len(same_kept)}, largest chunk-score difference {score_diff:.2e}; document "
        f"caches {document.stats['document_cache_bytes'] / 2**30:.2f} GiB on the {document.placement}"
    )
    if args.out:
        result = {
            "meta": {"head": head, "device": device.device_kind, "jax": jax.__version__, "args": vars(args)},
            "separate_s": sep_s,
            "staged_s": st_s,
            "speedup": sep_s / st_s,
            "document": document.stats,
            "same_tokens": same_tokens,
            "same_kept": same_kept,
            "max_score_diff": score_diff,
            "staged_stats": [r.stats for r in st],
            "separate_stats": [r.stats for r in sep],
        }
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
