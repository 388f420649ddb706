"""`python -m pcomp_jax.eval`: run a task with one or more methods, score, summarize, plot.

Outputs in --out: predictions.jsonl (one line per method and sample; re-running skips what is there, so an
interrupted run resumes), summary.json, summary.md and PNG plots.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from pcomp_jax.cli import (
    ALWAYS_CHUNK_HELP,
    KEEP_MARGIN_HELP,
    NLL_BIAS_HELP,
    SHARED_HEAD_HELP,
    add_attention_backend,
    margin,
    positive_int,
)
from pcomp_jax.pretrained import DTYPES

EPILOG = """examples:
  python -m pcomp_jax.eval --ckpt checkpoints/smollm2 --task passkey --method parallelcomp,truncate \\
      --lengths 8k,16k,32k --samples 20 --out runs/passkey
  python -m pcomp_jax.eval --ckpt checkpoints/smollm2 --task passkey --data infinitebench_passkey.zip \\
      --method parallelcomp --samples 20 --out runs/passkey_ib
  python -m pcomp_jax.eval --ckpt checkpoints/smollm2 --task niah --lengths 8k,16k,32k,64k --depths 10 \\
      --method parallelcomp,truncate,streaming --out runs/niah
  python -m pcomp_jax.eval --ckpt checkpoints/smollm2 --task longbench:multi_news --data multi_news.jsonl \\
      --longbench-config LongBench/config --method parallelcomp+evict-256 --samples 30 --out runs/multi_news
"""


def parse_length(text: str) -> int:
    """A length in tokens: 4000, 8k (8192), 1m (1048576); > 0."""
    text = text.strip().lower()
    scale = {"k": 1024, "m": 1024 * 1024}.get(text[-1:], 1)
    try:
        value = float(text[:-1] if scale > 1 else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad length {text!r} (use e.g. 8k, 128k, 1m or 4000)") from None
    if not value * scale >= 1 or value * scale != int(value * scale):
        raise argparse.ArgumentTypeError(f"lengths must be whole numbers of tokens >= 1, got {text!r}")
    return int(value * scale)


def parse_lengths(text: str) -> list[int]:
    """argparse type of --lengths: comma-separated lengths."""
    return [parse_length(x) for x in text.split(",")]


# settings that change the predictions of a (method, sample) pair: a resumed run must have the same ones
PREDICTION_SETTINGS = (
    "ckpt",
    "task",
    "chunk_tokens",
    "keep_chunks",
    "keep_margin",
    "nll_bias",
    "shared_head",
    "always_chunk",
    "template",
    "seed",
    "depths",
    "data",
    "longbench_config",
    "dtype",
    "attention_backend",
)


def run_settings(args: argparse.Namespace) -> dict:
    """The prediction-affecting settings of a run, with paths made absolute so that a resume from another
    directory compares equal."""
    settings = {name: getattr(args, name) for name in PREDICTION_SETTINGS}
    settings["always_chunk"] = bool(args.always_chunk)  # recorded as False: runs from before the flag always chunked
    for name in ("ckpt", "data", "longbench_config"):
        if settings[name] is not None:
            settings[name] = str(Path(settings[name]).resolve())
    return settings


def check_resume(out: Path, settings: dict) -> None:
    """Refuse to add to predictions made with other settings (named), or whose settings are unknown."""
    if not (out / "predictions.jsonl").exists():
        return
    recorded = None
    if (out / "settings.json").exists():
        recorded = json.loads((out / "settings.json").read_text())
    if recorded is None:
        raise ValueError(
            f"{out} holds predictions without recorded settings (an older run); choose a new --out to start over"
        )
    differ = [name for name in PREDICTION_SETTINGS if recorded.get(name) != settings[name]]
    if differ:
        changes = ", ".join(f"--{n.replace('_', '-')} {recorded.get(n)} -> {settings[n]}" for n in differ)
        raise ValueError(
            f"{out} holds predictions made with other settings ({changes}); resuming would mix them: choose a new --out"
        )


def build_parser() -> argparse.ArgumentParser:
    from pcomp_jax.eval.tasks import TASKS
    from pcomp_jax.parallelcomp.prompts import TEMPLATES

    p = argparse.ArgumentParser(
        prog="python -m pcomp_jax.eval",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ckpt", required=True, help="checkpoint directory (written by `python -m pcomp_jax.convert`)")
    p.add_argument("--task", required=True, help=f"one of {', '.join(sorted(TASKS))}, or longbench:<dataset>")
    p.add_argument(
        "--method",
        default="parallelcomp",
        help="comma-separated: parallelcomp[+evict[-CAP]][+calib-REGION-LO-HI][+keep-K], full, "
        "truncate, streaming (default parallelcomp)",
    )
    p.add_argument(
        "--lengths",
        type=parse_lengths,
        default=[8192, 16384, 32768],
        help="comma-separated lengths in tokens for generated tasks, such as 4000, 8k or 1m (default 8k,16k,32k)",
    )
    p.add_argument("--samples", type=positive_int, default=10, help="samples per length (datasets: the first N)")
    p.add_argument("--depths", type=positive_int, default=10, help="niah: depths per length (default 10)")
    p.add_argument(
        "--data",
        default=None,
        help="dataset file (InfiniteBench JSONL or zip; LongBench JSONL; niah: a directory of .txt files)",
    )
    p.add_argument("--longbench-config", default=None, help="LongBench's config/ directory (prompts, max lengths)")
    p.add_argument(
        "--chunk-tokens",
        type=positive_int,
        default=None,
        help="ParallelComp chunk budget (default: the model's preset, as `generate`: 512 under 1B parameters)",
    )
    p.add_argument(
        "--keep-chunks",
        type=positive_int,
        default=None,
        help="ParallelComp chunks kept (default: the model's preset, as `generate`: 2 under 1B parameters)",
    )
    p.add_argument("--keep-margin", type=margin, default=None, help=KEEP_MARGIN_HELP)
    p.add_argument("--nll-bias", type=margin, default=None, metavar="W", help=NLL_BIAS_HELP)
    p.add_argument("--shared-head", action="store_true", default=None, help=SHARED_HEAD_HELP)
    p.add_argument("--always-chunk", action="store_true", default=None, help=ALWAYS_CHUNK_HELP)
    p.add_argument(
        "--template",
        choices=sorted(TEMPLATES),
        default=None,
        help="prompt template of the generated and InfiniteBench tasks (default qa, the library's default); "
        "LongBench tasks always use LongBench's prompts",
    )
    p.add_argument(
        "--chunk-batch",
        type=positive_int,
        default=None,
        help="at most this many chunks prefilled together (default: chosen from the model and the device)",
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        default=1,
        help="answer this many samples of a method in one call, a batch of documents (default 1; the same answers, "
        "faster on an accelerator; samples batch together when they share the answer length and template)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated tasks (default 0)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="cast params to this dtype (default: as saved)")
    add_attention_backend(p)
    p.add_argument("--out", required=True, help="output directory (created; an existing run is resumed)")
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots (they need matplotlib: the eval extra)")
    return p


def require_extra(modules: list[str], why: str, hint: str = "") -> None:
    """Refuse to start, in one line, when optional modules of the `eval` extra are missing."""
    missing = [m for m in dict.fromkeys(modules) if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"{why} needs {', '.join(missing)}, from the eval extra: pip install 'pcomp-jax[eval]'{hint}")


def batches(todo: list, size: int, template_of) -> list:
    """[(method, [samples])]: consecutive samples of one method, at most `size` together, that share the answer
    length and the prompt template (one `generate` call each)."""
    out = []
    for method, sample in todo:
        key = (method[0], sample.max_new_tokens, template_of(sample))
        if out and out[-1][0] == key and len(out[-1][2]) < size:
            out[-1][2].append(sample)
        else:
            out.append((key, method, [sample]))
    return [(method, group) for _, method, group in out]


def run(args: argparse.Namespace) -> dict:
    from tqdm.auto import tqdm

    from pcomp_jax import text as user_text
    from pcomp_jax.attention import resolve_backend
    from pcomp_jax.decoding import Sampling
    from pcomp_jax.eval.methods import parse_method
    from pcomp_jax.eval.report import markdown_table, plot, summarize
    from pcomp_jax.eval.tasks import get_task
    from pcomp_jax.parallelcomp.config import ParallelCompConfig
    from pcomp_jax.parallelcomp.perplexity import continuation_nll
    from pcomp_jax.parallelcomp.pipeline import generate
    from pcomp_jax.pretrained import load

    task = get_task(args.task)
    if args.batch > 1 and task.kind == "nll":
        raise ValueError(f"--batch does not apply to {args.task}: perplexity scores one document at a time")
    require_extra(list(task.modules), f"scoring {args.task}")
    if not args.no_plots:
        require_extra(["matplotlib"], "plotting", " (or pass --no-plots)")
    base = ParallelCompConfig(
        chunk_tokens=args.chunk_tokens,
        keep_chunks=args.keep_chunks,
        keep_margin=args.keep_margin,
        nll_bias=args.nll_bias,
        shared_head=bool(args.shared_head),
        whole_when_fits=not args.always_chunk,
        chunk_batch=args.chunk_batch,
    )
    methods = [(name, *parse_method(name, base)) for name in args.method.split(",")]
    lengths = args.lengths if task.needs_lengths else []
    options = {"data": args.data, "longbench_config": args.longbench_config, "depths": args.depths}
    task.check(options)
    if args.template and args.task.startswith("longbench:"):
        raise ValueError("--template does not apply to LongBench tasks: they use LongBench's own prompts")
    out = Path(args.out)
    settings = run_settings(args)
    check_resume(out, settings)
    model = load(args.ckpt, dtype=args.dtype, attention_backend=args.attention_backend)
    backend = resolve_backend(model.attention_backend)
    samples = task.make(model.tokenizer, lengths, args.samples, args.seed, options)
    if not samples:
        raise ValueError("the task produced no samples")

    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    pred_file = out / "predictions.jsonl"
    rows = [json.loads(line) for line in pred_file.read_text().splitlines()] if pred_file.exists() else []
    done = {(r["method"], r["id"]) for r in rows}
    todo = [(m, s) for m in methods for s in samples if (m[0], s.id) not in done]
    bar = tqdm(total=len(todo), desc=args.task, unit="sample", file=sys.stderr, disable=not sys.stderr.isatty())
    with pred_file.open("a") as f:
        for (name, method, config), batch in batches(todo, args.batch, lambda s: args.template or s.template):
            config = config.replace(sampling=Sampling(max_new_tokens=batch[0].max_new_tokens, min_new_tokens=1))
            start = time.perf_counter()
            if task.kind == "nll":
                (sample,) = batch
                nll, stats = continuation_nll(
                    model,
                    user_text.encode(model.tokenizer, sample.context),
                    user_text.encode(model.tokenizer, sample.question),
                    method,
                    config,
                    backend,
                )
                answers = [("", nll, stats)]
            else:
                results = generate(
                    model,
                    [s.context for s in batch],
                    [s.question for s in batch],
                    config,
                    method=method,
                    template=args.template or batch[0].template,
                    progress=False,
                )
                answers = [
                    (r.text, task.score(r.text, s), {k: v for k, v in r.stats.items() if k != "chunk_scores"})
                    for r, s in zip(results, batch, strict=True)
                ]
            seconds = round((time.perf_counter() - start) / len(batch), 3)  # a batch's time shared by its samples
            for sample, (prediction, score, stats) in zip(batch, answers, strict=True):
                row = {
                    "task": args.task,
                    "method": name,
                    "id": sample.id,
                    "length": sample.length,
                    "prediction": prediction,
                    "answers": list(sample.answers),
                    "score": score,
                    "seconds": seconds,
                    "meta": sample.meta,
                    "stats": stats,
                }
                f.write(json.dumps(row) + "\n")
                rows.append(row)
            f.flush()
            bar.update(len(batch))
    bar.close()
    wanted = {s.id for s in samples}
    rows = [r for r in rows if r["id"] in wanted and r["method"] in {m[0] for m in methods}]
    summary = summarize(rows, perplexity=task.kind == "nll")
    import jax

    meta = {
        "task": args.task,
        "ckpt": str(args.ckpt),
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
        "settings": settings,
        "args": vars(args),
    }
    (out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=1) + "\n")
    table = markdown_table(args.task, summary)
    (out / "summary.md").write_text(f"{table}\n{meta['device']}, jax {meta['jax']}, {meta['date']}\n")
    if not args.no_plots:
        plot(args.task, rows, summary, out)
    print(table)
    whole = sum(1 for r in rows if r.get("stats", {}).get("read_whole"))
    if whole:
        print(
            f"note: {whole} of {len(rows)} predictions read their document whole (prompts with no question that fit "
            "the window, stats.read_whole); --always-chunk runs ParallelComp's chunks on them",
            file=sys.stderr,
        )
    return {"meta": meta, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
