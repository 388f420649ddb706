"""Summaries of scored predictions: per (method, length) means, a markdown table and plots (matplotlib, PNG)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path


def summarize(rows: list[dict], perplexity: bool = False) -> list[dict]:
    """Per method and length bucket: the mean score x100 (2 decimals, as LongBench reports), or with `perplexity`
    exp(mean NLL) of the rows' NLL scores (3 decimals)."""
    groups: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["length"])].append(r["score"])

    def value(s: list[float]) -> float:
        mean = sum(s) / len(s)
        return round(math.exp(mean), 3) if perplexity else round(100 * mean, 2)

    return [{"method": m, "length": n, "samples": len(s), "score": value(s)} for (m, n), s in sorted(groups.items())]


def markdown_table(task: str, summary: list[dict]) -> str:
    lengths = sorted({s["length"] for s in summary})
    methods = sorted({s["method"] for s in summary})
    cell = {(s["method"], s["length"]): f"{s['score']:.2f} (n={s['samples']})" for s in summary}
    label = lambda n: f"{n // 1024}K" if n and n % 1024 == 0 else (str(n) if n else "all")
    lines = [f"| {task} | " + " | ".join(label(n) for n in lengths) + " |", "|---" * (len(lengths) + 1) + "|"]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(cell.get((m, n), "") for n in lengths) + " |")
    return "\n".join(lines) + "\n"


def plot(task: str, rows: list[dict], summary: list[dict], out: Path) -> list[Path]:
    """Score by length per method; for tasks with depths (niah), a depth x length heatmap per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    lengths = sorted({s["length"] for s in summary})
    if len(lengths) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in sorted({s["method"] for s in summary}):
            pts = [(s["length"], s["score"]) for s in summary if s["method"] == m]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("perplexity" if task == "ppl" else "score")
        ax.set_title(task)
        ax.legend()
        fig.tight_layout()
        written.append(out / "score_by_length.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    if any("depth" in r.get("meta", {}) for r in rows) and task == "niah":
        for m in sorted({r["method"] for r in rows}):
            sel = [r for r in rows if r["method"] == m]
            depths = sorted({r["meta"]["depth"] for r in sel})
            grid = [[float("nan")] * len(lengths) for _ in depths]
            for r in sel:
                grid[depths.index(r["meta"]["depth"])][lengths.index(r["length"])] = r["score"]
            fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 2, 4))
            im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
            ax.set_xticks(range(len(lengths)), [f"{n // 1024}K" for n in lengths])
            ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
            ax.set_xlabel("context length")
            ax.set_ylabel("needle depth")
            ax.set_title(f"niah: {m}")
            fig.colorbar(im, ax=ax)
            fig.tight_layout()
            written.append(out / f"niah_heatmap_{m.replace('+', '_')}.png")
            fig.savefig(written[-1], dpi=120)
            plt.close(fig)
    return written
