"""What a user does right after `pip install pcomp-jax` (run by test_packaging.py under base_install.py).

    python tests/base_workload.py CKPT HF_DIR WORKDIR [plots]

Converts a tiny HF directory, answers a question over a document with the chat template on, and runs an eval;
with `plots`, the eval also draws its plots (the eval extra). Exits non-zero on the first failure.
"""

import sys
from pathlib import Path

from pcomp_jax.cli import main as generate_main
from pcomp_jax.convert.hf_to_flax import main as convert_main
from pcomp_jax.eval.cli import main as eval_main

ckpt, hf_dir, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
plots = sys.argv[4:] == ["plots"]
(work / "doc.txt").write_text("The cat sat on the mat. " * 40)
generate = f"generate --ckpt {ckpt} --context-file {work / 'doc.txt'} --question Where? --chat --chunk-tokens 192"
evaluate = f"--ckpt {ckpt} --task passkey --lengths 300 --samples 1 --chunk-tokens 192 --out {work / 'eval'}"
steps = {
    "convert": lambda: convert_main([hf_dir, "--out", str(work / "converted")]),
    "generate --chat": lambda: generate_main(generate.split() + ["--max-new-tokens", "2", "--json"]),
    "eval": lambda: eval_main(evaluate.split() + ([] if plots else ["--no-plots"])),
}
for name, step in steps.items():
    if step() != 0:
        sys.exit(f"base_workload: {name} failed")
print("base_workload: ok")
