"""Peak memory of converting a Llama-3-8B-shaped bf16 safetensors checkpoint (synthetic weights).

    python benchmarks/convert_memory.py --workdir /big/disk [--out convert_memory.json]

Writes a sharded HF directory with the real Llama-3-8B tensor names and shapes (8,030,261,248 params, ~16 GB bf16,
constant-valued to write fast), then runs the converter in a child process and reports its peak resident memory
(ru_maxrss) and wall time. The point is the requirement we set: an 8B model converts on a 24 GiB machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "bos_token_id": 128000,
    "eos_token_id": 128009,
    "hidden_act": "silu",
}


def tensors():
    d, f, v, kv = 4096, 14336, 128256, 1024
    yield "model.embed_tokens.weight", (v, d)
    for i in range(32):
        p = f"model.layers.{i}."
        yield from [
            (p + "self_attn.q_proj.weight", (d, d)),
            (p + "self_attn.k_proj.weight", (kv, d)),
            (p + "self_attn.v_proj.weight", (kv, d)),
            (p + "self_attn.o_proj.weight", (d, d)),
            (p + "mlp.gate_proj.weight", (f, d)),
            (p + "mlp.up_proj.weight", (f, d)),
            (p + "mlp.down_proj.weight", (d, f)),
            (p + "input_layernorm.weight", (d,)),
            (p + "post_attention_layernorm.weight", (d,)),
        ]
    yield "model.norm.weight", (d,)
    yield "lm_head.weight", (v, d)


def write_checkpoint(root: Path, tokenizer_dir: Path, shard_bytes: int = 4 << 30) -> int:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(CONFIG))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, root / name)
    shards, current, size, count = [], {}, 0, 0
    for name, shape in tensors():
        current[name] = np.full(shape, 0.01, ml_dtypes.bfloat16)
        size += current[name].nbytes
        count += int(np.prod(shape))
        if size >= shard_bytes:
            shards.append(current)
            save_file(current, str(root / f"part{len(shards)}.safetensors"))
            current, size = {}, 0
    shards.append(current)
    save_file(current, str(root / f"part{len(shards)}.safetensors"))
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for i, shard in enumerate(shards):
        (root / f"part{i + 1}.safetensors").rename(root / files[i])
        weight_map |= {name: files[i] for name in shard}
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="scratch directory with ~35 GB free")
    parser.add_argument("--tokenizer", required=True, help="a directory with tokenizer.json (any tokenizer)")
    parser.add_argument("--out", default="convert_memory.json")
    args = parser.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    params = write_checkpoint(work / "hf", Path(args.tokenizer))
    code = (
        "import resource, sys; from pcomp_jax.convert.hf_to_flax import main; rc = main(sys.argv[1:]); "
        "print('maxrss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, str(work / "hf"), "--out", str(work / "ckpt")], capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    rss = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("maxrss_kib")]
    result = {
        "params": params,
        "returncode": proc.returncode,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(rss[0] / 2**20, 2) if rss else None,
        "stderr_tail": proc.stderr[-2000:],
        "children_maxrss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
