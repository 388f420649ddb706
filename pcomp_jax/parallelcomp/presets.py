"""The defaults a user gets with no flags, keyed on the model (docs/RESULTS.md, "Defaults").

`ParallelCompConfig` leaves `chunk_tokens`, `keep_chunks`, `keep_margin` and `nll_bias` as None until a call sees
the model; `resolve` then fills them from `preset_for(model_config)`. Explicit values are never changed. The margin
and the NLL bias are part of the preset's keep rule: they are filled only when `keep_chunks` is unset too (an
explicit `keep_chunks` reads that many chunks as equals, as in the paper, unless a margin or a bias is also given).

- Small models (under 1B parameters): 512-token chunks, keep 2 weighed by their question NLL with `nll_bias` 2, no
  margin. Chosen by
  `benchmarks/sweep_defaults.py` on SmolLM2-135M-Instruct (the only small model validated here) with the `qa`
  template and the chat template on: passkey and NIAH both at 95-100% from 16K to 32K, where 1024- and 2048-token
  chunks fall to 25-85%. A 0.1-nat margin takes InfiniteBench passkey from 85-95% to 100% at 8K-64K but loses
  NIAH samples whose needle chunk, read alone, answers with a footnote marker, so it stays an option
  (docs/RESULTS.md, "The keep margin"); no preset sets one today. The bias of 2 (the second kept chunk's
  attention scaled by exp(-2 x its NLL gap to the best)) takes that passkey from 85% to 95-100% and changes no
  NIAH score, on an H100 at 8K-128K and on the CPU (docs/RESULTS.md, "Kept chunks weighed by their NLL").
- Larger models: the paper's settings for its 8K-window Llama-3 (7600-token chunks, keep 3; 3600 for 4K-window
  models, 90% of the window otherwise). They are the official code's and cannot be validated on this project's
  machines; they are documented as such.
"""

from __future__ import annotations

import dataclasses

from pcomp_jax.parallelcomp.config import ParallelCompConfig

SMALL_MODEL_PARAMS = 1_000_000_000
PAPER_CHUNKS = {8192: 7600, 4096: 3600}  # the official chunk budgets (docs/ALGORITHM.md 2.2)


@dataclasses.dataclass(frozen=True)
class Preset:
    chunk_tokens: int
    keep_chunks: int
    keep_margin: float | None
    nll_bias: float | None
    why: str


def param_count(model_config) -> int:
    """Parameters of a Llama-family model, from its config alone."""
    c = model_config
    d, h = c.hidden_size, c.head_dim
    attention = d * (c.num_heads + 2 * c.num_kv_heads) * h + c.num_heads * h * d
    attention += (c.num_heads + 2 * c.num_kv_heads) * h * c.qkv_bias + d * c.o_bias
    layer = attention + 3 * d * c.intermediate_size + 2 * d
    embeddings = c.vocab_size * d * (1 if c.tie_word_embeddings else 2)
    return c.num_layers * layer + embeddings + d


def preset_for(model_config) -> Preset:
    window = model_config.trained_context
    if param_count(model_config) < SMALL_MODEL_PARAMS:
        return Preset(min(512, window // 2), 2, None, 2.0, "small model: measured on SmolLM2-135M (docs/RESULTS.md)")
    chunk = PAPER_CHUNKS.get(window, max(256, int(window * 0.9)))
    return Preset(chunk, 3, None, None, "the paper's settings for 8K-window models (not validated here)")


def resolve(config: ParallelCompConfig, model_config) -> ParallelCompConfig:
    """`config` with its unset knobs (None) taken from the model's preset; the margin and the NLL bias only with the
    preset's keep."""
    if config.chunk_tokens is not None and config.keep_chunks is not None:
        return config
    preset = preset_for(model_config)
    changes = {}
    if config.chunk_tokens is None:
        changes["chunk_tokens"] = preset.chunk_tokens
    if config.keep_chunks is None:
        changes["keep_chunks"] = preset.keep_chunks
        for name in ("keep_margin", "nll_bias"):
            if getattr(config, name) is None:
                changes[name] = getattr(preset, name)
    return config.replace(**changes)
