"""Command line: `python -m pcomp_jax generate --ckpt DIR --prompt TEXT [--json]`."""

from __future__ import annotations

import argparse
import json
import sys
import time

EPILOG = """examples:
  python -m pcomp_jax generate --ckpt checkpoints/smollm2 --prompt "The capital of France is"
  python -m pcomp_jax generate --ckpt checkpoints/smollm2 --chat --prompt "Name three colours." --json
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pcomp_jax",
        description="Run pcomp-jax models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser(
        "generate",
        help="complete a prompt with a converted checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
        description="Complete a prompt. Convert a model first with `python -m convert.hf_to_flax`.",
    )
    gen.add_argument("--ckpt", required=True, help="checkpoint directory written by convert.hf_to_flax")
    gen.add_argument("--prompt", required=True, help="text to complete")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    gen.add_argument("--max-new-tokens", type=_positive, default=64, help="most tokens to generate (default 64)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1 = off)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    gen.add_argument(
        "--attention-backend",
        choices=["auto", "reference", "cudnn"],
        default="auto",
        help="auto = cuDNN on GPU, reference jnp elsewhere",
    )
    gen.add_argument("--json", action="store_true", help="print one JSON object {text, tokens, seconds}")
    return parser


def cmd_generate(args: argparse.Namespace) -> int:
    from pcomp_jax.decoding import Sampling
    from pcomp_jax.pretrained import load

    sampling = Sampling(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    model = load(args.ckpt, attention_backend=args.attention_backend)
    start = time.perf_counter()
    result = model.complete(args.prompt, sampling, chat=args.chat)
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({"text": result.text, "tokens": result.tokens, "seconds": round(seconds, 3)}))
    else:
        print(result.text)
    return 0


def main(argv: list[str] | None = None) -> int:
    from pcomp_jax.checkpoint import CheckpointError
    from pcomp_jax.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return cmd_generate(args)
    except (CheckpointError, ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
