"""`load(path)`: a converted checkpoint as one object holding params, config and tokenizer."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from pcomp_jax import text as user_text
from pcomp_jax.checkpoint import load_params, load_tokenizer, read_config
from pcomp_jax.config import LlamaConfig
from pcomp_jax.decoding import Sampling, generate_ids
from pcomp_jax.errors import InputError
from pcomp_jax.layout import to_runtime
from pcomp_jax.model import Params


@dataclasses.dataclass(frozen=True)
class Completion:
    """Generated text (special tokens removed) and the generated token ids (EOS included if produced)."""

    text: str
    tokens: list[int]


@dataclasses.dataclass
class Model:
    """A Llama-family model ready to run: params (on the default device), config and HF tokenizer."""

    params: Params
    config: LlamaConfig
    tokenizer: Any
    attention_backend: str = "auto"
    mesh: Any = None  # a jax.sharding.Mesh with a "chunks" axis (pcomp_jax.sharding), or None for one device

    def encode(self, text: str, chat: bool = False) -> list[int]:
        """Token ids of `text`, with the tokenizer's BOS if it adds one.

        Plain `text` is a raw prompt: control-token strings in it (`<|im_start|>`, ...) become control ids, so a
        caller can write a template by hand. With `chat`, `text` is one user turn of the tokenizer's chat template
        and stays plain text: control-token strings in it cannot close the turn (`pcomp_jax.text`).
        """
        if chat:
            if not getattr(self.tokenizer, "chat_template", None):
                raise ValueError("this tokenizer has no chat template; drop --chat")
            rendered = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
            head, tail = user_text.chat_frame(self.tokenizer)
            if not (rendered.startswith(head) and rendered.endswith(tail)):  # a template that rewrites around text
                rendered = head + text + tail
            return user_text.encode(self.tokenizer, rendered, [(len(head), len(rendered) - len(tail))])
        return self.tokenizer(text)["input_ids"]

    def complete(self, prompt: str, sampling: Sampling = Sampling(), chat: bool = False) -> Completion:
        """Continue `prompt` (plain generation, no ParallelComp)."""
        if not prompt:
            raise InputError("the prompt is empty")
        ids = self.encode(prompt, chat)
        window = self.config.max_position_embeddings
        if len(ids) + sampling.max_new_tokens > window:
            raise InputError(
                f"the prompt ({len(ids)} tokens) plus max_new_tokens ({sampling.max_new_tokens}) is "
                f"{len(ids) + sampling.max_new_tokens} tokens, past the model's {window}-token window; for a long "
                "input give it as a document (--context-file, answered with ParallelComp or another --method)"
            )
        ids = generate_ids(self.params, self.config, ids, sampling, self.attention_backend)
        return Completion(text=self.tokenizer.decode(ids, skip_special_tokens=True), tokens=ids)


DTYPES = ("float32", "bfloat16")  # what params may be cast to at load time


def load(path: str | Path, attention_backend: str = "auto", dtype: str | None = None, mesh=None) -> Model:
    """Load a checkpoint written by `python -m pcomp_jax.convert` (optionally casting params to `dtype`). `mesh`: a
    `jax.sharding.Mesh` or a spec such as "chunks=4", "model=2" or "chunks=2,model=2" (`pcomp_jax.sharding`): chunk
    groups spread over the `chunks` axis, the weights split over the `model` axis by `sharding.RULES` (one layer at
    a time, so no device ever holds more than its share)."""
    from pcomp_jax.sharding import check_model_axis, parse_mesh, place_param

    if isinstance(mesh, str):
        mesh = parse_mesh(mesh)
    if dtype is not None:
        try:
            name = jnp.dtype(dtype).name
        except TypeError:
            name = None
        if name not in DTYPES:
            raise InputError(f"unsupported dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    config, _ = read_config(path)
    check_model_axis(config, mesh)
    cast = jnp.dtype(dtype) if dtype else None
    put = lambda x, p: place_param(x.astype(cast) if cast else x, p, mesh)
    params = to_runtime(load_params(path, config), config, put=put)
    return Model(
        params=params, config=config, tokenizer=load_tokenizer(path), attention_backend=attention_backend, mesh=mesh
    )
