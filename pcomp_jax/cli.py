"""Command line: `python -m pcomp_jax generate ...`.

Two modes: `--prompt TEXT` completes a prompt (plain generation); `--context-file F --question Q` answers a question
about a long document with ParallelComp (or the `full` / `truncate` baselines), and `--questions-file Q` answers
many, the document prefilled once (JSON Lines out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pcomp_jax.errors import InputError

EPILOG = """examples:
  python -m pcomp_jax generate --ckpt checkpoints/smollm2 --prompt "The capital of France is"
  python -m pcomp_jax generate --ckpt checkpoints/smollm2 --chat --prompt "Name three colours." --json
  python -m pcomp_jax generate --ckpt checkpoints/smollm2 --context-file book.txt \\
      --question "Who is the narrator?" --chunk-tokens 2048 --keep-chunks 3
  cat report.txt | python -m pcomp_jax generate --ckpt checkpoints/smollm2 --context-file - \\
      --template summarize --max-new-tokens 200 --json
  python -m pcomp_jax generate --ckpt checkpoints/smollm2 --context-file book.txt \
      --questions-file questions.txt > answers.jsonl       # one prefill, a JSON line per question
"""


def add_attention_backend(parser: argparse.ArgumentParser) -> None:
    """The --attention-backend option, shared by the generate and eval CLIs (names as in pcomp_jax.attention)."""
    parser.add_argument(
        "--attention-backend",
        choices=["auto", "reference", "cudnn", "pallas"],
        default="auto",
        help="auto = cuDNN on GPU (token-eviction scores from our Pallas score kernel), reference jnp elsewhere; "
        "pallas = our attention kernel for prefills that need scores (interpreted, slow, off the GPU)",
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, with a one-line message otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def margin(text: str) -> float:
    """argparse type of --keep-margin and --nll-bias: a finite number >= 0, with a one-line message otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


SHARED_HEAD_HELP = (
    "the question reads the chunks' common head (BOS, instruction and chat header) once instead of once per kept "
    "chunk (default: once per chunk, as in the paper)"
)
ALWAYS_CHUNK_HELP = (
    "run ParallelComp's chunks even for a prompt with no question (such as --template summarize) over a document "
    "that fits the model's window (default: such a prompt reads the document whole, in one pass)"
)
KEEP_MARGIN_HELP = (
    "read a kept chunk after the best only if its question NLL is within this many nats of the best's, so "
    "--keep-chunks is an upper bound (default: none, every kept chunk is read)"
)

NLL_BIAS_HELP = (
    "weigh the kept chunks by their question NLL: the attention toward a kept chunk is scaled by exp(-W x its NLL "
    "gap to the best), so near-ties are read as equals and a chunk far behind almost not (default: the model's "
    "preset when --keep-chunks is unset: 2 under 1B parameters, none above; 0: equal weights as in the paper)"
)


def _layers(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO-HI such as 0-7, got {text!r}") from None
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    from pcomp_jax.parallelcomp.config import REGIONS
    from pcomp_jax.parallelcomp.pipeline import METHODS
    from pcomp_jax.parallelcomp.prompts import TEMPLATES

    parser = argparse.ArgumentParser(
        prog="python -m pcomp_jax",
        description="Run pcomp-jax models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser(
        "generate",
        help="complete a prompt, or answer a question about a long document",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
        description="Complete --prompt, or answer --question about --context-file with ParallelComp. Convert a "
        "model first with `python -m pcomp_jax.convert`.",
    )
    gen.add_argument("--ckpt", required=True, help="checkpoint directory written by `python -m pcomp_jax.convert`")
    what = gen.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="text to complete (plain generation)")
    what.add_argument("--context-file", metavar="F", help="UTF-8 text file with the long context, or - for stdin")
    asked = gen.add_mutually_exclusive_group()
    asked.add_argument("--question", help="the question about the context")
    asked.add_argument(
        "--questions-file",
        metavar="F",
        help="UTF-8 file with one question per line (blank lines skipped): the document is prefilled once and every "
        "question answered over it; prints JSON Lines, one object per question, in order",
    )
    gen.add_argument(
        "--method",
        choices=METHODS,
        help="parallelcomp (default), full (whole context in one pass) or truncate (middle-truncate "
        "to the model's training window)",
    )
    gen.add_argument(
        "--template",
        choices=sorted(TEMPLATES),
        help="prompt around the context (default qa; retrieval for needle/passkey questions)",
    )
    gen.add_argument(
        "--chunk-tokens",
        type=positive_int,
        help="context tokens per chunk (default: the model's preset: 512 under 1B parameters, the paper's 7600 for "
        "8K-window models above)",
    )
    gen.add_argument(
        "--keep-chunks",
        type=positive_int,
        help="chunks kept after eviction (default: the model's preset: 2 under 1B parameters, 3 above)",
    )
    gen.add_argument("--keep-margin", type=margin, help=KEEP_MARGIN_HELP)
    gen.add_argument("--nll-bias", type=margin, metavar="W", help=NLL_BIAS_HELP)
    gen.add_argument("--shared-head", action="store_true", default=None, help=SHARED_HEAD_HELP)
    gen.add_argument("--always-chunk", action="store_true", default=None, help=ALWAYS_CHUNK_HELP)
    gen.add_argument(
        "--chunk-batch",
        type=positive_int,
        help="at most this many chunks prefilled together (default: chosen from the model and the device)",
    )
    gen.add_argument(
        "--split",
        choices=["tokens", "chars"],
        help="split by tokens (default) or by characters as the official code does",
    )
    gen.add_argument(
        "--capacity",
        type=positive_int,
        help="enable token eviction: context tokens kept per chunk, layer and KV head",
    )
    gen.add_argument("--calibrate", choices=REGIONS, help="enable attention calibration in a region")
    gen.add_argument(
        "--calibrate-layers",
        type=_layers,
        metavar="LO-HI",
        help="0-based inclusive layer range for calibration, with --calibrate (default 0-7)",
    )
    gen.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wrap the prompt in the tokenizer's chat template (default: plain for --prompt; for "
        "--context-file, when the tokenizer has one)",
    )
    gen.add_argument("--max-new-tokens", type=positive_int, default=64, help="most tokens to generate (default 64)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1 = off)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    add_attention_backend(gen)
    gen.add_argument(
        "--json", action="store_true", help="print one JSON object: text, tokens, seconds, and stats for --context-file"
    )
    gen.add_argument(
        "--mesh",
        metavar="SPEC",
        help="devices to use: chunks=N spreads the chunk groups over N devices (weights replicated), model=M splits "
        "the weights over M (tensor parallel; M must divide the KV heads), chunks=N,model=M both (default one device)",
    )
    hosts = gen.add_argument_group("several processes (hosts)", "the same command in every process (docs/SCALING.md)")
    hosts.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address: join a multi-process run")
    hosts.add_argument("--num-processes", type=int, default=1, help="processes in the run (with --coordinator)")
    hosts.add_argument("--process-id", type=int, default=0, help="this process's index, 0 to N-1 (with --coordinator)")
    return parser


# options that only apply to a document (--context-file), and their defaults there
DOCUMENT_DEFAULTS = {
    "question": "",
    "questions_file": None,
    "method": "parallelcomp",
    "template": "qa",
    "chunk_tokens": None,  # None: the model's preset (pcomp_jax.parallelcomp.presets)
    "keep_chunks": None,
    "keep_margin": None,
    "nll_bias": None,
    "shared_head": False,
    "always_chunk": False,
    "chunk_batch": None,
    "split": "tokens",
    "capacity": None,
    "calibrate": None,
    "calibrate_layers": (0, 7),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_options(args: argparse.Namespace) -> None:
    """Refuse options that would be ignored in the chosen mode; fill the document options' defaults."""
    given = [name for name in DOCUMENT_DEFAULTS if getattr(args, name) is not None]
    if args.context_file is None:
        if given:
            raise InputError(
                f"{', '.join(map(_flag, given))} only apply to a document (--context-file); --prompt is plain "
                "generation of the prompt as written"
            )
        return
    if args.questions_file is not None and args.method not in (None, "parallelcomp"):
        raise InputError("--questions-file answers over one ParallelComp prefill; --method must be parallelcomp")
    if args.calibrate_layers is not None and args.calibrate is None:
        raise InputError("--calibrate-layers needs --calibrate REGION (calibration is off without it)")
    for name, default in DOCUMENT_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def read_context(path: str) -> str:
    """The context text from a file or stdin: refused when missing, not UTF-8 or empty; a UTF-8 BOM is dropped."""
    if path == "-":
        data = sys.stdin.buffer.read()
        name = "standard input"
    else:
        p = Path(path)
        if p.is_dir():
            raise InputError(f"context file {path} is a directory; give a text file")
        if not p.is_file():
            raise InputError(f"context file not found: {path}")
        data = p.read_bytes()
        name = f"context file {path}"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{name} is not UTF-8 text (byte {err.start}); convert it first, e.g. with iconv") from None
    if not text.strip():
        raise InputError(f"{name} is empty; give a document, or use --prompt for plain generation")
    return text


def read_questions(path: str) -> list[str]:
    """The non-blank lines of a UTF-8 file (a BOM dropped), refused when missing, not UTF-8 or without a question."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"questions file not found: {path}")
    try:
        lines = p.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise InputError(f"questions file {path} is not UTF-8 text (byte {err.start})") from None
    questions = [line.strip() for line in lines if line.strip()]
    if not questions:
        raise InputError(f"questions file {path} holds no question (one per line)")
    return questions


def cmd_generate(args: argparse.Namespace) -> int:
    from pcomp_jax.checkpoint import read_config
    from pcomp_jax.decoding import Sampling
    from pcomp_jax.parallelcomp.chunking import check_question
    from pcomp_jax.parallelcomp.config import Calibration, ParallelCompConfig, TokenEviction
    from pcomp_jax.parallelcomp.pipeline import check_config, generate
    from pcomp_jax.parallelcomp.prompts import get_template
    from pcomp_jax.pretrained import load

    # everything that needs no model is checked before the weights load
    check_options(args)
    long_context = args.context_file is not None
    sampling = Sampling(
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=1 if long_context else 0,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    model_config, _ = read_config(args.ckpt)
    questions = read_questions(args.questions_file) if long_context and args.questions_file else None
    if long_context:
        for question in questions or [args.question]:
            check_question(get_template(args.template), question)
        config = ParallelCompConfig(
            chunk_tokens=args.chunk_tokens,
            keep_chunks=args.keep_chunks,
            keep_margin=args.keep_margin,
            nll_bias=args.nll_bias,
            shared_head=args.shared_head,
            whole_when_fits=not args.always_chunk,
            chunk_batch=args.chunk_batch,
            split=args.split,
            chat=args.chat,
            sampling=sampling,
            eviction=TokenEviction(capacity=args.capacity) if args.capacity else None,
            calibration=Calibration(region=args.calibrate, layers=args.calibrate_layers) if args.calibrate else None,
        )
        config = check_config(config, model_config)
        context = read_context(args.context_file)
    from pcomp_jax.sharding import init_distributed, parse_mesh

    if args.coordinator:
        init_distributed(args.coordinator, args.num_processes, args.process_id)
    mesh = parse_mesh(args.mesh)
    model = load(args.ckpt, attention_backend=args.attention_backend, mesh=mesh)
    start = time.perf_counter()
    if questions:
        from tqdm.auto import tqdm

        from pcomp_jax.parallelcomp.staged import answer, prefill_document

        document = prefill_document(model, context, config, template=args.template)
        for i, question in enumerate(tqdm(questions, desc="questions", disable=not sys.stderr.isatty())):
            result = answer(model, document, question, progress=False)
            stats = {**result.stats, "document": document.stats} if i == 0 else result.stats
            print(json.dumps({"question": question, "text": result.text, "tokens": result.tokens, "stats": stats}))
        return 0
    if long_context:
        result = generate(model, context, args.question, config, method=args.method, template=args.template)
        payload = {"text": result.text, "tokens": result.tokens, "stats": result.stats}
    else:
        result = model.complete(args.prompt, sampling, chat=bool(args.chat))
        payload = {"text": result.text, "tokens": result.tokens}
    payload["seconds"] = round(time.perf_counter() - start, 3)
    if args.process_id == 0:  # every process computed the same answer
        print(json.dumps(payload) if args.json else result.text)
    return 0


def console_main() -> int:
    """The `pcomp-jax` command (the same as `python -m pcomp_jax`)."""
    return main()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return cmd_generate(args)
    except ValueError as err:  # every user-facing error type of ours is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
