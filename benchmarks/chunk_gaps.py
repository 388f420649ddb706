"""How far the best chunk stands out, and what reading 1, 2 or 3 chunks answers (issue 13, the keep margin).

Per sample: the document is prefilled once (`prefill_document`), then answered with keep 1, 2 and 3 (no margin);
a row holds each answer's score and kept chunks and the four lowest chunk NLLs. The gap between the best and the
next chunk is what `ParallelCompConfig.keep_margin` compares with.

    python benchmarks/chunk_gaps.py --ckpt checkpoints/smollm2 --dtype bfloat16 --task passkey_ib \\
        --data passkey_8192.jsonl --samples 20 --out gaps.jsonl
    python benchmarks/chunk_gaps.py --ckpt checkpoints/smollm2 --dtype bfloat16 --task niah --length 16384 \\
        --out gaps.jsonl

Rows go to --out (JSON Lines) as they finish; a summary of the gaps prints at the end.
`python benchmarks/chunk_gaps.py --report ROWS.jsonl ...` prints a Markdown table of correct answers, a file a row
and a variant a column (the variants of any file; "-" where a file lacks one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time

import numpy as np

from pcomp_jax import ParallelCompConfig, Sampling, load
from pcomp_jax.eval.tasks import get_task
from pcomp_jax.parallelcomp.prompts import TEMPLATES
from pcomp_jax.parallelcomp.staged import answer, prefill_document

VARIANTS = "1,2,3"


def variant(name: str) -> dict:
    """ "2" reads 2 chunks; "2h" reads 2 with the instruction head once (`ParallelCompConfig.shared_head`); "2b5"
    reads 2 weighed by their question NLL (`ParallelCompConfig.nll_bias` 5); "2hb5" both."""
    match = re.fullmatch(r"(\d+)(h?)(?:b([\d.]+))?", name)
    if match is None:
        raise SystemExit(f"chunk_gaps: variant {name!r} is not KEEP[h][bBIAS], e.g. 2, 2h, 2b5")
    keep, head, bias = match.groups()
    return {"keep_chunks": int(keep), "shared_head": bool(head), "nll_bias": None if bias is None else float(bias)}


def samples(model, args):
    if args.task == "passkey_ib":
        return get_task("passkey"), get_task("passkey").make(model.tokenizer, [], args.samples, 0, {"data": args.data})
    niah = get_task("niah")
    return niah, niah.make(model.tokenizer, [args.length], 0, 0, {"depths": args.depths, "data": args.data})


def report(files: list[str]) -> str:
    """Correct answers per file (rows) and variant (columns: by keep, head, bias)."""
    tables = {f: [json.loads(line) for line in open(f)] for f in files}
    names = {k[1:] for rows in tables.values() for k in rows[0] if re.fullmatch(r"k\d.*", k)}
    names = sorted(names, key=lambda n: [-1.0 if x is None else x for x in variant(n).values()])
    lines = ["| rows | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for f, rows in tables.items():
        cells = [f"{sum(r['k' + n] for r in rows):.0f}" if "k" + n in rows[0] else "-" for n in names]
        lines.append(f"| {f.split('/')[-1]} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--report"]:
        print(report(argv[1:]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--dtype", choices=["float32", "bfloat16"])
    p.add_argument("--task", choices=["passkey_ib", "niah"], required=True)
    p.add_argument("--data", help="passkey_ib: an InfiniteBench passkey JSONL; niah: an essays directory (optional)")
    p.add_argument("--samples", type=int, default=20, help="passkey_ib: the first N samples")
    p.add_argument("--length", type=int, default=16384, help="niah: document tokens")
    p.add_argument("--depths", type=int, default=10, help="niah: needle depths")
    p.add_argument("--chunk-tokens", type=int, default=512)
    p.add_argument(
        "--variants",
        default=VARIANTS,
        help="comma-separated keeps; an 'h' suffix reads the head once, 'bW' weighs the chunks by NLL (nll_bias W)",
    )
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    names = args.variants.split(",")
    most = max(variant(n)["keep_chunks"] for n in names)
    model = load(args.ckpt, dtype=args.dtype)
    task, items = samples(model, args)
    gaps = []
    with open(args.out, "w") as out:
        for s in items:
            start = time.perf_counter()
            sampling = Sampling(max_new_tokens=s.max_new_tokens, min_new_tokens=1)
            config = ParallelCompConfig(chunk_tokens=args.chunk_tokens, keep_chunks=most, sampling=sampling)
            document = prefill_document(model, s.context, config, template=TEMPLATES["qa"], progress=False)
            row = {"id": s.id}
            for name in names:
                kept_config = dataclasses.replace(document.config, **variant(name))
                result = answer(model, dataclasses.replace(document, config=kept_config), s.question, progress=False)
                row[f"k{name}"] = task.score(result.text, s)
                row[f"kept{name}"] = result.stats["kept_chunks"]
                row[f"text{name}"] = result.text[:60]
            scores = np.asarray(result.stats["chunk_scores"])
            row["top"] = [(int(i), round(float(scores[i]), 4)) for i in np.argsort(scores)[:4]]
            row["sec"] = round(time.perf_counter() - start, 1)
            gaps.append(row["top"][1][1] - row["top"][0][1] if len(row["top"]) > 1 else float("inf"))
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(json.dumps(row), flush=True)
    for name in names:
        print(f"keep {name}: {sum(r for r in _column(args.out, f'k{name}')):.0f} of {len(items)} correct")
    print(f"gap best -> next: min {min(gaps):.3f}, median {float(np.median(gaps)):.3f}, max {max(gaps):.3f} nats")
    return 0


def _column(path: str, key: str) -> list[float]:
    with open(path) as f:
        return [json.loads(line)[key] for line in f]


if __name__ == "__main__":
    sys.exit(main())
