"""The PyTorch peers, with HF transformers (torch is imported only here, and only when a peer runs).

- `hf`: HF dense prefill (SDPA) of BOS + context + question with `logits_to_keep=1`, then greedy decoding: what a
  user would run without ParallelComp.
- `official`: the official ParallelComp code's schedule re-done in HF: chunks one at a time, each with the question
  appended; full logits for every position in float32 (as transformers 4.43 returns them); the question's NLL per
  chunk; the `keep` best chunk caches kept; those concatenated in document order (BOS only from the first, question
  part dropped); the question prefilled after them at positions starting at the longest kept chunk; greedy decoding.
  The official repository pins transformers 4.43 and cannot run beside transformers 5, so this re-implementation of
  its schedule is the peer. A test on SmolLM2 checks that it keeps the same chunks as our pipeline.

Both use random weights of the same shape as ours (timing does not depend on the values).
"""

from __future__ import annotations

import time


def hf_model(c, device: str, dtype):
    """A random-weight `LlamaForCausalLM` with SDPA attention of our config's shape, made on `device`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim,
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        tie_word_embeddings=c.tie_word_embeddings,
        bos_token_id=c.bos_token_id,
        eos_token_id=list(c.eos_token_ids),
        attn_implementation="sdpa",
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise directly in the target dtype (a 70B model has no room for float32)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(hf)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _layer_kv(cache, i: int):
    layer = cache.layers[i]
    return layer.keys, layer.values


def dense_hf(model, ids: list[int], new: int, device: str) -> tuple[float, float, list[int]]:
    """(prefill seconds, decode seconds, tokens): one dense prefill and `new` greedy tokens."""
    import torch

    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1)
        _sync(device)
        mid = time.perf_counter()
        cache, tokens = out.past_key_values, [token]
        for _ in range(new - 1):
            out = model(input_ids=token[:, None], past_key_values=cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1)
            tokens.append(token)
        _sync(device)
        return mid - start, time.perf_counter() - mid, [int(t) for t in torch.cat(tokens).tolist()]


def official_schedule(
    model, chunks: list[list[int]], q_len: int, keep: int, new: int, device: str, bos_len: int = 1
) -> dict:
    """The official schedule over `chunks` (each `[BOS] + piece + question`, the question its last `q_len` ids).

    Returns prefill and decode seconds, the kept chunk indices (document order), their NLLs and the new tokens."""
    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache

    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        kept: list[tuple[float, int, list]] = []  # (nll, index, per-layer (k, v) of the context part)
        nlls = []
        for index, ids in enumerate(chunks):
            x = torch.tensor([ids], device=device)
            out = model(input_ids=x, use_cache=True)  # every position's logits, as transformers 4.43 gives them
            logits = out.logits.float()
            n = len(ids)
            nll = F.cross_entropy(logits[0, n - q_len - 1 : n - 1], x[0, n - q_len :]).item()  # a sync, as there
            nlls.append(nll)
            worst = max(kept)[0] if len(kept) == keep else None
            if worst is None or nll < worst:
                cache = out.past_key_values
                layers = [
                    tuple(t[:, :, : n - q_len].clone() for t in _layer_kv(cache, i))
                    for i in range(model.config.num_hidden_layers)
                ]
                if worst is not None:
                    kept.remove(max(kept))
                kept.append((nll, index, layers))
            del out, logits
        kept.sort(key=lambda item: item[1])  # document order
        merged = DynamicCache()
        for layer in range(model.config.num_hidden_layers):
            ks = [item[2][layer][0][:, :, (0 if j == 0 else bos_len) :] for j, item in enumerate(kept)]
            vs = [item[2][layer][1][:, :, (0 if j == 0 else bos_len) :] for j, item in enumerate(kept)]
            merged.update(torch.cat(ks, dim=2), torch.cat(vs, dim=2), layer)
        slots = merged.get_seq_length()
        first = max(len(chunks[item[1]]) - q_len for item in kept)  # the question starts after the longest chunk
        question = torch.tensor([chunks[0][-q_len:]], device=device)
        out = model(
            input_ids=question,
            past_key_values=merged,
            position_ids=torch.arange(first, first + q_len, device=device)[None],
            cache_position=torch.arange(slots, slots + q_len, device=device),
            use_cache=True,
            logits_to_keep=1,
        )
        token = out.logits[:, -1].argmax(-1)
        _sync(device)
        mid = time.perf_counter()
        tokens = [token]
        for t in range(new - 1):
            out = model(
                input_ids=token[:, None],
                past_key_values=merged,
                position_ids=torch.tensor([[first + q_len + t]], device=device),
                cache_position=torch.tensor([slots + q_len + t], device=device),
                use_cache=True,
            )
            token = out.logits[:, -1].argmax(-1)
            tokens.append(token)
        _sync(device)
        return {
            "prefill_s": mid - start,
            "decode_s": time.perf_counter() - mid,
            "kept_chunks": [item[1] for item in kept],
            "nlls": nlls,
            "tokens": [int(t) for t in torch.cat(tokens).tolist()],
            "cache_tokens": slots + q_len,
        }


def run(spec: dict) -> dict:
    """The worker entry for methods `hf` and `official` (see worker.py)."""
    import torch

    from pcomp_jax.bench.shapes import SHAPES
    from pcomp_jax.bench.workload import compile_seconds, inputs, text_of_length, tokenizer
    from pcomp_jax.checkpoint import read_config

    c = SHAPES[spec["model"]] if spec["model"] in SHAPES else read_config(spec["model"])[0]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[spec["dtype"]]
    model = hf_model(c, device, dtype)
    tokenizer = tokenizer(spec)
    if tokenizer is None:
        context, question = inputs(spec, c.vocab_size)
        encode = lambda: (context, question)
    else:  # the same text as ours, tokenized inside the timed call
        text = text_of_length(tokenizer, spec["length"])
        encode = lambda: tuple(
            tokenizer(t, add_special_tokens=False)["input_ids"] for t in (text, spec["question_text"])
        )
        context, question = encode()
    bos = [] if c.bos_token_id is None else [c.bos_token_id]
    new = spec["new_tokens"]
    w = spec["chunk_tokens"]

    def make(context, question):
        """(run(n): the method over the first n context tokens, the lengths of its model inputs)."""
        if spec["method"] == "hf":
            run = lambda n: dense_hf(model, [*bos, *context[:n], *question], new, device)
            return run, [len(bos) + len(context) + len(question)]
        chunks = [[*bos, *context[i : i + w], *question] for i in range(0, len(context), w)]
        run = lambda n: official_schedule(
            model, chunks[: -(-n // w)], len(question), spec["keep_chunks"], new, device, len(bos)
        )
        return run, [len(x) for x in chunks]

    # PyTorch compiles nothing: a warm-up on a short input loads the kernels and handles (run twice: the first
    # run's extra time is reported as one-time cost)
    run, _ = make(context, question)
    compile_s = compile_seconds(lambda: run(min(len(context), 2 * w)))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    context, question = encode()
    host = time.perf_counter() - start
    run, lengths = make(context, question)
    result = run(len(context))
    wall = time.perf_counter() - start
    if isinstance(result, tuple):
        result = {"prefill_s": result[0], "decode_s": result[1], "tokens": result[2], "cache_tokens": lengths[0]}
    return {
        "prefill_s": result["prefill_s"],
        "first_token_s": result["prefill_s"],
        "decode_s": result["decode_s"],
        "new_tokens": len(result["tokens"]),
        "wall_s": wall,
        "host_s": host if tokenizer is not None else None,
        "compile_s": compile_s,
        "chunks": len(lengths),
        "kept_chunks": result.get("kept_chunks"),
        "chunk_lengths": lengths,
        "logit_rows": sum(lengths) if spec["method"] == "official" else 1,
        "cache_tokens": result["cache_tokens"],
        "peak_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
        "torch": torch.__version__,
    }
