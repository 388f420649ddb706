"""Our token eviction against NVIDIA kvpress's SnapKV on the real SmolLM2, single-chunk needle-in-a-haystack inputs.

kvpress needs torch and transformers >= 4.56, < 5.3, so it runs in its own virtual environment; the three steps
exchange files in DIR:

    python benchmarks/kvpress_compare.py prepare --ckpt checkpoints/smollm2 --dir DIR      # our venv: inputs
    KVVENV/bin/python benchmarks/kvpress_compare.py kvpress --gguf GGUF_FILE --dir DIR     # kvpress venv
    python benchmarks/kvpress_compare.py compare --ckpt checkpoints/smollm2 --dir DIR     # our venv: table + JSON

Scoring is compared on the same observation rows (the last `window` tokens of the input, as kvpress uses) with our
`TokenEviction(pool="avg", pool_kernel=5)` (kvpress's average pooling): for every layer and KV head, the
`capacity` context tokens each side keeps (kvpress's scores ranked over our candidates, the context tokens) and
their overlap. Answers are compared end to end: kvpress compresses the whole prompt at the same budget in
`model.generate`; ours runs the pipeline with one chunk and token eviction.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# kvpress SnapKVPress's kernel (its default) and a window inside the question part (kvpress keeps its window
# unconditionally, so a window reaching into the context would decide some context tokens without scores)
WINDOW, KERNEL = 32, 5
LENGTH = 2000  # context tokens: one chunk, within the 8K window, quick on a CPU
DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
BUDGETS = (0.25, 0.5)  # capacity as a fraction of the context tokens
MAX_NEW = 24


def prepare(args) -> None:
    from pcomp_jax import haystack, load
    from pcomp_jax.parallelcomp.chunking import chunk_prompt
    from pcomp_jax.parallelcomp.prompts import get_template

    model = load(args.ckpt)
    samples = []
    for depth in DEPTHS:
        h = haystack.build(model.tokenizer, haystack.essays_text(), LENGTH, depth)
        p = chunk_prompt(
            model.tokenizer, h.context, h.question, get_template("retrieval"), chunk_tokens=4096, chat=True
        )
        ids = p.chunk_ids(0)
        assert len(ids) - p.context_len(0) >= WINDOW, "the observation window must lie inside the question part"
        samples.append(
            {
                "depth": depth,
                "context": h.context,
                "question": h.question,
                "answer": h.answer_key,
                "ids": ids,
                "context_len": p.context_len(0),
                "bos_len": len(p.bos),
                "head_len": p.head_len,
            }
        )
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    (Path(args.dir) / "inputs.json").write_text(json.dumps({"window": WINDOW, "kernel": KERNEL, "samples": samples}))
    print(f"wrote {len(samples)} inputs to {args.dir}")


def run_kvpress(args) -> None:
    """In the kvpress venv: per-layer SnapKV scores of every input, and answers with the prompt compressed."""
    import numpy as np
    import torch
    from kvpress import SnapKVPress
    from transformers import AutoTokenizer, LlamaForCausalLM

    gguf = Path(args.gguf)
    model = LlamaForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    data = json.loads((Path(args.dir) / "inputs.json").read_text())
    scores: dict[int, torch.Tensor] = {}

    class Recording(SnapKVPress):
        def score(self, module, hidden_states, keys, values, attentions, kwargs):
            out = super().score(module, hidden_states, keys, values, attentions, kwargs)
            scores[module.layer_idx] = out[0].float().clone()  # [K, T]
            return out

    out, answers = {}, []
    for i, s in enumerate(data["samples"]):
        ids = torch.tensor([s["ids"]])
        scores.clear()
        with torch.inference_mode(), Recording(compression_ratio=0.5, window_size=WINDOW, kernel_size=KERNEL)(model):
            model(ids)
        layers = sorted(scores)
        out[f"scores_{i}"] = np.stack([scores[layer].numpy() for layer in layers])  # [L, K, T]
        for budget in BUDGETS:
            kept = int(budget * (s["context_len"] - s["head_len"]))
            ratio = 1 - (kept + s["head_len"] + (len(s["ids"]) - s["context_len"])) / len(s["ids"])
            with (
                torch.inference_mode(),
                SnapKVPress(compression_ratio=ratio, window_size=WINDOW, kernel_size=KERNEL)(model),
            ):
                gen = model.generate(ids, max_new_tokens=MAX_NEW, do_sample=False)
            text = tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)
            answers.append({"depth": s["depth"], "budget": budget, "kvpress_ratio": ratio, "text": text})
            print(f"kvpress depth {s['depth']} budget {budget}: {text!r}", flush=True)
        gen = model.generate(ids, max_new_tokens=MAX_NEW, do_sample=False)
        answers.append({"depth": s["depth"], "budget": 1.0, "text": tok.decode(gen[0, ids.shape[1] :], True)})
    np.savez_compressed(Path(args.dir) / "kvpress_scores.npz", **out)
    (Path(args.dir) / "kvpress_answers.json").write_text(json.dumps(answers, indent=1))
    import kvpress
    import transformers

    meta = {"kvpress": getattr(kvpress, "__version__", "0.5.5"), "transformers": transformers.__version__}
    (Path(args.dir) / "kvpress_meta.json").write_text(json.dumps(meta))


def our_scores(model, ids: list[int]):
    """Per layer and query head, the attention mass each key gets from the last WINDOW rows (our prefill)."""
    import jax.numpy as jnp

    from pcomp_jax.attention import last_rows
    from pcomp_jax.model import forward

    t = len(ids)
    out, cache = forward(
        model.params,
        model.config,
        jnp.asarray([ids]),
        jnp.arange(t)[None],
        score_rows=last_rows(jnp.asarray([t]), WINDOW),
        attention_backend="reference",
    )
    return out.scores[:, 0], cache.stacked()[2][:, 0]  # [L, N, T], [L, T, K]


def kept_sets(scores_lkt, valid, sample, capacity, kernel):
    """Our selection (select_tokens) applied to [L, K or N, T] scores: kept context slots [L, K, cap]."""
    import jax.numpy as jnp
    import numpy as np

    from pcomp_jax.parallelcomp.config import TokenEviction
    from pcomp_jax.parallelcomp.eviction import select_tokens

    eviction = TokenEviction(capacity=capacity, window=WINDOW, pool_kernel=kernel, pool="avg")
    idx, _ = select_tokens(
        jnp.asarray(scores_lkt),
        valid,
        jnp.int32(sample["context_len"]),
        bos_len=sample["bos_len"],
        context_slots=sample["context_len"],
        eviction=eviction,
    )
    return np.asarray(idx)


def overlap(a, b) -> float:
    """Mean over layers and heads of |A & B| / |A| for kept index sets [L, K, cap]."""
    import numpy as np

    pairs = zip(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), strict=True)
    same = [len(set(x) & set(y)) / len(x) for x, y in pairs]
    return float(np.mean(same)), float(np.min(same))


def compare(args) -> None:
    import numpy as np

    from pcomp_jax import ParallelCompConfig, Sampling, TokenEviction, generate, load

    model = load(args.ckpt)
    d = Path(args.dir)
    data = json.loads((d / "inputs.json").read_text())
    theirs = np.load(d / "kvpress_scores.npz")
    answers = json.loads((d / "kvpress_answers.json").read_text())
    rows = []
    for i, s in enumerate(data["samples"]):
        ours, valid = our_scores(model, s["ids"])
        k = np.asarray(theirs[f"scores_{i}"])[:, :, : len(s["ids"])]  # kvpress pads the window with max + 1
        for budget in BUDGETS:
            cap = int(budget * (s["context_len"] - s["head_len"]))
            want = kept_sets(k, valid, s, cap, 1)  # kvpress's scores are pooled and group-averaged already
            got = kept_sets(np.asarray(ours), valid, s, cap, KERNEL)
            if args.export and i == 0 and budget == BUDGETS[0]:  # test data: the inputs and kvpress's choice
                meta = np.asarray([s["context_len"], s["bos_len"], cap])
                np.savez_compressed(
                    args.export, ids=np.asarray(s["ids"], np.int32), meta=meta, kvpress=want.astype(np.int16)
                )
            mean, worst = overlap(got, want)
            config = ParallelCompConfig(
                chunk_tokens=4096,
                keep_chunks=1,
                eviction=TokenEviction(capacity=cap, window=WINDOW, pool_kernel=KERNEL, pool="avg"),
                sampling=Sampling(max_new_tokens=MAX_NEW, min_new_tokens=1),
            )
            ours_text = generate(model, s["context"], s["question"], config, template="retrieval").text
            kv = next(a for a in answers if a["depth"] == s["depth"] and a["budget"] == budget)["text"]
            row = {
                "depth": s["depth"],
                "budget": budget,
                "capacity": cap,
                "overlap_mean": mean,
                "overlap_min": worst,
                "ours_found": s["answer"].lower() in ours_text.lower(),
                "kvpress_found": s["answer"].lower() in kv.lower(),
                "ours": ours_text,
                "kvpress": kv,
            }
            rows.append(row)
            print(
                f"depth {s['depth']:.1f} budget {budget:.0%} cap {cap}: overlap mean {mean:.3f} min {worst:.3f} | "
                f"needle ours {row['ours_found']} kvpress {row['kvpress_found']}",
                flush=True,
            )
    full = {a["depth"]: a["text"] for a in answers if a["budget"] == 1.0}
    summary = {
        "overlap_mean": float(np.mean([r["overlap_mean"] for r in rows])),
        "overlap_min": float(np.min([r["overlap_min"] for r in rows])),
        "no_eviction_found": {str(k): data["samples"][0]["answer"].lower() in v.lower() for k, v in full.items()},
        "rows": rows,
    }
    (d / "compare.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "kvpress", "compare"])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--ckpt", default="checkpoints/smollm2")
    parser.add_argument("--gguf", default=None)
    parser.add_argument("--export", default=None, help="compare: write the first input and kvpress's kept sets here")
    args = parser.parse_args()
    {"prepare": prepare, "kvpress": run_kvpress, "compare": compare}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
