"""`python -m pcomp_jax.bench`: prefill and decode speed of ParallelComp beside dense prefill and the PyTorch peers.

Every (method, length) runs in its own process (worker.py). The matmul peak and the copy bandwidth that the FLOP
utilisation and the decode floor are measured against are measured in the same run, on the same card.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pcomp_jax.bench.shapes import SHAPES, kv_bytes_per_token, prefill_flops, weight_bytes
from pcomp_jax.bench.worker import RESULT
from pcomp_jax.errors import InputError
from pcomp_jax.eval.cli import parse_lengths, require_extra

CANONICAL = {
    "model": "llama3-8b",
    "chunk_tokens": 7680,
    "keep_chunks": 3,
    "question_tokens": 20,
    "new_tokens": 16,
}
BASELINES = ("dense", "hf", "official")
PEERS = ("hf", "official")  # need torch

EPILOG = """examples:
  python -m pcomp_jax.bench --lengths 8k,32k,128k,256k,1m --out bench.json     # the canonical configuration
  python -m pcomp_jax.bench --model smollm2 --chunk-tokens 2048 --chunk-batch 16 --lengths 32k,128k
  python -m pcomp_jax.bench --model checkpoints/smollm2 --baselines dense    # real text through the tokenizer
  python -m pcomp_jax.bench --smoke                                         # everything, tiny, on the CPU
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pcomp_jax.bench",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        default=None,
        help=f"a named shape with random bf16 weights made on the device ({', '.join(SHAPES)}), or a converted "
        "checkpoint directory, driven with its tokenizer on real text (default llama3-8b)",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        metavar="DIR",
        help="drive a named shape with this tokenizer (a directory with tokenizer.json, e.g. a converted "
        "checkpoint) on real text instead of random token ids; every method then tokenizes the same text inside "
        "its timed call",
    )
    p.add_argument(
        "--mesh",
        default=None,
        metavar="SPEC",
        help="also run ParallelComp over a device mesh, e.g. chunks=2 (row parallelcomp-mesh: its peak is the largest "
        "per device, its MFU per device, and the table ends with its speed-up over one device)",
    )
    p.add_argument("--lengths", type=parse_lengths, default=None, help="context lengths (default 8k,32k,128k)")
    p.add_argument(
        "--baselines",
        default=None,
        help="comma-separated from dense (our forward, one pass), hf (HF transformers dense, SDPA) and official "
        "(the official schedule in HF PyTorch); hf and official need torch (default: all that can run)",
    )
    from pcomp_jax.cli import positive_int

    p.add_argument("--chunk-tokens", type=positive_int, default=None, help="ParallelComp chunk budget (default 7680)")
    p.add_argument("--keep-chunks", type=positive_int, default=None, help="chunks kept (default 3)")
    p.add_argument(
        "--chunk-batch",
        type=positive_int,
        default=None,
        help="at most this many chunks prefilled together (default: the library's choice for the model and device)",
    )
    p.add_argument("--question-tokens", type=positive_int, default=None, help="question length (default 20)")
    p.add_argument("--new-tokens", type=positive_int, default=None, help="greedy tokens decoded (default 16)")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default=None, help="weights (default bfloat16)")
    p.add_argument("--timeout", type=positive_int, default=900, help="seconds allowed to one measurement")
    p.add_argument("--out", default=None, help="write the results as JSON to this file (and the plot beside it)")
    p.add_argument("--plot", default=None, help="write the plot to this PNG (default: --out with .png)")
    p.add_argument("--smoke", action="store_true", help="the whole command on a tiny shape, small lengths (CPU, CI)")
    return p


def settings(args: argparse.Namespace) -> dict:
    """The run's settings: --smoke's small ones or the canonical configuration, overridden by explicit options."""
    base = dict(CANONICAL, lengths=[8192, 32768, 131072], dtype="bfloat16")
    if args.smoke:
        base.update(model="tiny", chunk_tokens=256, lengths=[1024], dtype="float32", new_tokens=4)
    for name in ("model", "chunk_tokens", "keep_chunks", "question_tokens", "new_tokens", "dtype", "lengths"):
        if getattr(args, name) is not None:
            base[name] = getattr(args, name)
    base["chunk_batch"] = args.chunk_batch
    base["smoke"] = args.smoke
    base["tokenizer"] = args.tokenizer
    base["mesh"] = args.mesh
    return base


def model_config(model: str):
    if model in SHAPES:
        return SHAPES[model]
    from pcomp_jax.checkpoint import read_config

    return read_config(model)[0]


def choose_baselines(text: str | None) -> tuple[list[str], list[str]]:
    """(baselines to run, notes about the ones skipped)."""
    has_torch = importlib.util.find_spec("torch") is not None
    if text is None:
        chosen = [b for b in BASELINES if has_torch or b not in PEERS]
        return chosen, ([] if has_torch else ["hf and official skipped: torch is not installed"])
    chosen = [b for b in text.split(",") if b]
    unknown = [b for b in chosen if b not in BASELINES]
    if unknown:
        raise InputError(f"unknown baseline {', '.join(unknown)} (choose from {', '.join(BASELINES)})")
    if not has_torch and any(b in PEERS for b in chosen):
        raise InputError("the hf and official baselines need PyTorch: pip install 'pcomp-jax[torch]'")
    return chosen, []


def run_worker(spec: dict, timeout: int) -> dict:
    """One measurement in a fresh process; {"status": "ok", ...} or {"status": <why not>}."""
    cmd = [sys.executable, "-m", "pcomp_jax.bench.worker", json.dumps(spec)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return {"status": "ok", **json.loads(line[len(RESULT) :])}
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    memory = any(w in proc.stderr for w in ("RESOURCE_EXHAUSTED", "OutOfMemory", "out of memory"))
    return {"status": "out of memory" if memory else f"failed: {tail[:200]}"}


def fits(method: str, length: int, c, s: dict, device_bytes: int | None) -> bool:
    """Whether a single-pass baseline's weights and KV cache fit the device (ParallelComp's memory is flat)."""
    if device_bytes is None or method not in ("dense", "hf"):
        return True
    itemsize = 2 if s["dtype"] == "bfloat16" else 4
    need = weight_bytes(c, itemsize) + kv_bytes_per_token(c, itemsize) * (length + s["question_tokens"])
    return need < 0.9 * device_bytes


def derive(row: dict, c, s: dict, ceil: dict) -> dict:
    """Add tokens/s, model FLOP utilisation on the useful tokens, decode ms/token and its bandwidth floor."""
    if row["status"] != "ok":
        return row
    itemsize = 2 if s["dtype"] == "bfloat16" else 4
    row["tokens_per_s"] = row["length"] / row["prefill_s"]
    flops = prefill_flops(c, row["chunk_lengths"], row["logit_rows"])
    row["mfu"] = flops / row["prefill_s"] / ceil["matmul_flops_per_s"] / row.get("devices", 1)  # per device
    steps = row["new_tokens"] - (1 if row["method"] in PEERS else 0)  # HF's first token comes from the prefill
    row["decode_ms_per_token"] = 1000 * row["decode_s"] / max(1, steps)
    floor = (weight_bytes(c, itemsize) + kv_bytes_per_token(c, itemsize) * row["cache_tokens"]) / ceil[
        "copy_bytes_per_s"
    ]
    row["decode_floor_ms"] = 1000 * floor
    row["decode_vs_floor"] = row["decode_ms_per_token"] / row["decode_floor_ms"]
    row["peak_gib"] = None if row.get("peak_bytes") is None else row["peak_bytes"] / 2**30
    return row


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _chunk_batch(rows: list[dict], s: dict) -> str:
    """The chunk_batch asked for, or the one the library chose (per length when it varied)."""
    if s["chunk_batch"] is not None:
        return str(s["chunk_batch"])
    used = sorted({r["chunk_batch_used"] for r in rows if r.get("chunk_batch_used")})
    return f"auto ({', '.join(map(str, used))})" if used else "auto"


def table(rows: list[dict], s: dict, meta: dict) -> str:
    canonical = all(s[k] == v for k, v in CANONICAL.items())
    head = (
        f"{s['model']} ({s['dtype']}), chunk_tokens {s['chunk_tokens']}, keep_chunks {s['keep_chunks']}, "
        f"chunk_batch {_chunk_batch(rows, s)}, {s['question_tokens']}-token question, {s['new_tokens']} greedy new "
        f"tokens, no chat template{' (the canonical configuration)' if canonical else ''}\n"
        f"{meta['device']}, jax {meta['jax']}, torch {meta.get('torch') or '-'}, {meta['date']}; matmul peak "
        f"{meta['matmul_tflops']:.3g} TFLOP/s, copy bandwidth {meta['copy_tb_s']:.3g} TB/s (measured in this run)\n"
    )
    cols = (
        "| context | method | prefill s | tokens/s | MFU | peak GiB | host s | first token s | decode ms/token "
        "| x floor | call s | compile s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        length = f"{r['length'] // 1024}K" if r["length"] % 1024 == 0 else str(r["length"])
        if r["status"] != "ok":
            lines.append(f"| {length} | {r['method']} | {r['status']} | | | | | | | | | |")
            continue
        lines.append(
            f"| {length} | {r['method']} | {r['prefill_s']:.3f} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} "
            f"| {_fmt(r['peak_gib'], '.1f')} | {_fmt(r.get('host_s'), '.3f')} | {r['first_token_s']:.3f} "
            f"| {r['decode_ms_per_token']:.2f} | {r['decode_vs_floor']:.1f} | {r['wall_s']:.3f} "
            f"| {r['compile_s']:.1f} |"
        )
    return head + cols + "\n".join(lines) + "\n" + _mesh_speedups(rows, s)


def _mesh_speedups(rows: list[dict], s: dict) -> str:
    """One line per length: the mesh row's prefill speed-up over the one-device row of the same run."""
    ok = {(r["method"], r["length"]): r for r in rows if r["status"] == "ok"}
    out = []
    for (method, length), r in ok.items():
        one = ok.get(("parallelcomp", length))
        if method == "parallelcomp-mesh" and one is not None:
            speedup = one["prefill_s"] / r["prefill_s"]
            out.append(
                f"mesh {s['mesh']} ({r['devices']} devices) at {length} tokens: prefill {speedup:.2f}x one device, "
                f"same answer: {r['tokens'] == one['tokens']}\n"
            )
    return "".join(out)


def plot(rows: list[dict], s: dict, meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        ok = [r for r in rows if r["method"] == method and r["status"] == "ok"]
        if not ok:
            continue
        x = [r["length"] for r in ok]
        left.plot(x, [r["tokens_per_s"] for r in ok], marker="o", label=method)
        if all(r["peak_gib"] is not None for r in ok):
            right.plot(x, [r["peak_gib"] for r in ok], marker="o", label=method)
    for ax, label in ((left, "prefill tokens/s"), (right, "peak device memory, GiB")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "not measured on this device", ha="center", transform=ax.transAxes)
    fig.suptitle(f"{s['model']}, chunk {s['chunk_tokens']}, keep {s['keep_chunks']} — {meta['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    s = settings(args)
    c = model_config(s["model"])
    baselines, notes = choose_baselines(args.baselines)
    plot_path = Path(args.plot) if args.plot else (Path(args.out).with_suffix(".png") if args.out else None)
    if plot_path is not None:
        require_extra(["matplotlib"], "the plot")
    base = {k: s[k] for k in ("model", "chunk_tokens", "keep_chunks", "chunk_batch", "question_tokens", "new_tokens")}
    base.update(dtype=s["dtype"], smoke=s["smoke"], tokenizer=s["tokenizer"], mesh=s["mesh"])
    ours = ("parallelcomp", "parallelcomp-mesh") if s["mesh"] else ("parallelcomp",)
    if s["mesh"]:
        from pcomp_jax.sharding import parse_mesh

        parse_mesh(s["mesh"])  # a bad spec is one line here, not a failed worker
    if s["tokenizer"] is not None:
        from pcomp_jax.checkpoint import load_tokenizer

        if s["model"] not in SHAPES:
            raise InputError("--tokenizer drives a named shape; a checkpoint directory brings its own tokenizer")
        if len(load_tokenizer(s["tokenizer"])) > c.vocab_size:
            raise InputError(f"the tokenizer in {s['tokenizer']} has more tokens than {s['model']}'s vocabulary")
    if s["model"] not in SHAPES or s["tokenizer"] is not None:
        base["question_text"] = "What does the author say about startups? Answer in one sentence."
    ceil = run_worker(dict(base, method="ceilings", length=0), args.timeout)
    if ceil["status"] != "ok":
        raise InputError(f"measuring the device's ceilings failed: {ceil['status']}")
    device_bytes = ceil["device_bytes"]
    rows = []
    for length in s["lengths"]:
        for method in (*ours, *baselines):
            print(f"bench: {method} at {length} tokens ...", file=sys.stderr, flush=True)
            if not fits(method, length, c, s, device_bytes):
                row = {"status": "does not fit"}
            else:
                row = run_worker(dict(base, method=method, length=length), args.timeout)
            rows.append(derive(dict(row, method=method, length=length), c, s, ceil))
    meta = {
        "command": "python -m pcomp_jax.bench " + " ".join(sys.argv[1:]),
        "device": ceil["device"],
        "jax": ceil["jax"],
        "torch": next((r.get("torch") for r in rows if r.get("torch")), None),
        "date": time.strftime("%Y-%m-%d"),
        "matmul_tflops": ceil["matmul_flops_per_s"] / 1e12,
        "copy_tb_s": ceil["copy_bytes_per_s"] / 1e12,
        "notes": notes,
    }
    text = table(rows, s, meta)
    print(text + "".join(f"note: {n}\n" for n in notes))
    result = {"meta": meta, "settings": s, "ceilings": ceil, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if plot_path is not None:
        plot(rows, s, meta, plot_path)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
