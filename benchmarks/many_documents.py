"""A batch of documents: N separate `generate_from_ids` calls against one call over the list of N documents, on
random weights of a named shape, with the answers compared.

    python benchmarks/many_documents.py --model smollm2 --length 32768 --documents 8 --out many_docs.json
    python benchmarks/many_documents.py --smoke          # tiny shape, CPU

With `--ckpt DIR` a real checkpoint answers real text instead: N needle-in-a-haystack documents of the essays
(`pcomp_jax.haystack`, needles at depths spread over the document), through `generate` with the library's defaults
(chunking, template, chat) and greedy answers of at most --new-tokens; the table also counts the needles found.

Both sides run their whole workload once first (compiling every shape), then are timed (median of --repeats); the
table gives wall seconds, the ratio and whether every answer and kept-chunk list is identical.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from pcomp_jax import ParallelCompConfig, Sampling, generate_from_ids
from pcomp_jax.bench.shapes import SHAPES, random_params
from pcomp_jax.pretrained import Model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", choices=sorted(SHAPES))
    p.add_argument("--length", type=int, default=32768, help="context tokens of each document")
    p.add_argument("--documents", type=int, default=8)
    p.add_argument("--question-tokens", type=int, default=20)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--chunk-tokens", type=int, default=2048)
    p.add_argument("--keep-chunks", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="timed runs after the first; 0: one run, compilation timed")
    p.add_argument("--out", default=None)
    p.add_argument("--smoke", action="store_true", help="tiny shape, 3 documents of 2K tokens, float32")
    p.add_argument("--ckpt", help="a converted checkpoint: real weights over needle-in-a-haystack documents")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="with --ckpt")
    args = p.parse_args()
    dtype = "bfloat16"
    if args.smoke:
        args.model, args.length, args.documents, args.chunk_tokens, args.new_tokens = "tiny", 2048, 3, 256, 4
        args.repeats, dtype = 1, "float32"
    new = args.new_tokens
    if args.ckpt:
        separate, batch, found, dtype = real_text(args)
        args.model = args.ckpt
    else:
        (separate, batch), found = random_ids(args, dtype), None

    rows = {}
    for name, run in (("separate", separate), ("batch", batch)):
        times, out = [], None
        for i in range(args.repeats + 1):  # the first run compiles every shape; timed only with --repeats 0
            start = time.perf_counter()
            out = run()
            if i or not args.repeats:
                times.append(time.perf_counter() - start)
        rows[name] = (float(np.median(times)), times, out)
    sep_s, _, sep = rows["separate"]
    bat_s, _, bat = rows["batch"]
    same_tokens = [a.tokens == b.tokens for a, b in zip(sep, bat, strict=True)]
    same_kept = [a.stats["kept_chunks"] == b.stats["kept_chunks"] for a, b in zip(sep, bat, strict=True)]
    score_diff = max(
        float(np.max(np.abs(np.subtract(a.stats["chunk_scores"], b.stats["chunk_scores"]))))
        for a, b in zip(sep, bat, strict=True)
    )
    device = jax.devices()[0]
    b = bat[0].stats
    if args.ckpt:
        what = (
            f"{args.length} tokens (needle in a haystack), at most {new} new tokens each, the library's "
            f"defaults (chunk_tokens {b['chunk_budget']}, keep up to {len(b['kept_chunks'])}, qa, chat)"
        )
    else:
        what = (
            f"{args.length} context tokens, questions of {args.question_tokens} tokens, {new} new tokens each, "
            f"chunk_tokens {args.chunk_tokens}, keep {args.keep_chunks}"
        )
    head = (
        f"{args.model} ({dtype}), {args.documents} documents of {what}, chunk_batch auto; {device.device_kind}, "
        f"jax {jax.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    print(head)
    timing = f"median of {args.repeats}" if args.repeats else "one run, compiling"
    print(f"| how | wall s ({timing}) | prefill groups | prefill s | decode s |")
    print("|---|---|---|---|---|")
    groups = sum(r.stats["prefill_groups"] for r in sep)
    pre = sum(r.stats["prefill_seconds"] for r in sep)
    dec = sum(r.stats["decode_seconds"] for r in sep)
    print(f"| {args.documents} separate calls | {sep_s:.3f} | {groups} | {pre:.3f} | {dec:.3f} |")
    print(
        f"| one call over {args.documents} documents | {bat_s:.3f} | {b['prefill_groups']} | "
        f"{b['prefill_seconds']:.3f} | {b['decode_seconds']:.3f} |"
    )
    print(
        f"speed-up {sep_s / bat_s:.2f}x; identical answers {sum(same_tokens)}/{len(same_tokens)}, identical kept "
        f"chunks {sum(same_kept)}/{len(same_kept)}, largest chunk-score difference {score_diff:.2e}"
    )
    if found is not None:
        print(f"needles found: separate {sum(map(found, sep))}/{len(sep)}, batch {sum(map(found, bat))}/{len(bat)}")
        for a, b in zip(sep, bat, strict=True):
            print(f"  {a.text!r} | {b.text!r}")
    if args.out:
        result = {
            "meta": {"head": head, "device": device.device_kind, "jax": jax.__version__, "args": vars(args)},
            "separate_s": sep_s,
            "batch_s": bat_s,
            "separate_times": rows["separate"][1],
            "batch_times": rows["batch"][1],
            "speedup": sep_s / bat_s,
            "same_tokens": same_tokens,
            "same_kept": same_kept,
            "max_score_diff": score_diff,
            "batch_stats": [r.stats for r in bat],
            "separate_stats": [r.stats for r in sep],
            "answers": [[a.text, b.text] for a, b in zip(sep, bat, strict=True)] if found else None,
        }
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


def random_ids(args, dtype):
    """(separate, batch) over random token ids and random weights of the shape `args.model`."""
    c = SHAPES[args.model]
    model = Model(params=jax.block_until_ready(random_params(c, 0, dtype)), config=c, tokenizer=None)
    rng = np.random.default_rng(args.length)
    contexts = [rng.integers(10, c.vocab_size, args.length).tolist() for _ in range(args.documents)]
    questions = [rng.integers(10, c.vocab_size, args.question_tokens).tolist() for _ in range(args.documents)]
    new = args.new_tokens
    config = ParallelCompConfig(
        chunk_tokens=args.chunk_tokens,
        keep_chunks=args.keep_chunks,
        chat=False,
        sampling=Sampling(max_new_tokens=new, min_new_tokens=new),
    )

    def separate():
        return [
            generate_from_ids(model, x, q, config, progress=False) for x, q in zip(contexts, questions, strict=True)
        ]

    def batch():
        return generate_from_ids(model, contexts, questions, config, progress=False)

    return separate, batch


def real_text(args):
    """(separate, batch, found, dtype) over needle-in-a-haystack documents read by the checkpoint `args.ckpt` with
    the library's defaults; `found(result)` tells whether an answer names the needle."""
    from pcomp_jax import generate, haystack
    from pcomp_jax.pretrained import load

    model = load(args.ckpt, dtype=args.dtype)
    essays = haystack.essays_text()
    depths = [(i + 0.5) / args.documents for i in range(args.documents)]
    samples = [haystack.build(model.tokenizer, essays, args.length, d) for d in depths]
    texts = [s.context for s in samples]
    question = samples[0].question
    config = ParallelCompConfig(sampling=Sampling(max_new_tokens=args.new_tokens))

    def separate():
        return [generate(model, t, question, config, progress=False) for t in texts]

    def batch():
        return generate(model, texts, question, config, progress=False)

    return separate, batch, lambda r: samples[0].correct(r.text), args.dtype


if __name__ == "__main__":
    main()
