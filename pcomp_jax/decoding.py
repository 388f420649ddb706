"""Prefill + jitted decoding over a preallocated KV cache: greedy by default, or temperature/top-p sampling.

`decode` is shared by plain generation and by the ParallelComp pipeline (which prefills its own merged cache): it
takes a cache with room left, the logits of the last prompt token and the next position, and runs a
`lax.while_loop` of single-token steps until every row has produced EOS or `max_new_tokens` tokens.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pcomp_jax.cache import KVCache
from pcomp_jax.config import LlamaConfig
from pcomp_jax.model import Params, forward

PROMPT_BUCKET = 128  # prompts are right-padded to a multiple of this, so nearby lengths share one compilation


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Decoding options.

    max_new_tokens: upper bound on generated tokens (EOS included).
    min_new_tokens: EOS is banned until this many tokens exist (the official ParallelComp code uses 1).
    temperature: 0 means greedy (argmax); > 0 samples from softmax(logits / temperature).
    top_p: nucleus sampling mass in (0, 1]; 1 disables it. Ignored when greedy.
    seed: PRNG seed for sampling; greedy decoding does not use it.
    """

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        def integer(x):
            return isinstance(x, numbers.Integral) and not isinstance(x, bool)

        def finite(x):
            return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

        if not integer(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not integer(self.min_new_tokens) or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be an integer in [0, max_new_tokens], got {self.min_new_tokens!r}")
        if not finite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not finite(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        if not integer(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


def next_token(logits: jax.Array, key: jax.Array, sampling: Sampling) -> jax.Array:
    """Pick the next token [B] from logits [B, V] (float32)."""
    if sampling.temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / sampling.temperature
    if sampling.top_p < 1:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # keep a token while the mass before it is < top_p
        sorted_logits = jnp.where(mass_before < sampling.top_p, sorted_logits, -jnp.inf)
        logits = jnp.full_like(logits, -jnp.inf).at[jnp.arange(logits.shape[0])[:, None], order].set(sorted_logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def decode(
    params: Params,
    config: LlamaConfig,
    cache: KVCache,
    logits: jax.Array,
    position: jax.Array,
    *,
    sampling: Sampling,
    eos_ids: tuple[int, ...],
    attention_backend: str = "auto",
) -> tuple[jax.Array, jax.Array]:
    """Generate up to `sampling.max_new_tokens` tokens.

    cache: holds the prompt and has at least max_new_tokens free slots after `cache.end`. It is consumed: the loop
    writes the new tokens into its buffers in place (`decode_in_place`), and its arrays are deleted where the
    platform supports donation, so read what you need of them before the call.
    logits: [B, V] float32, the logits after the last prompt token. position: [B] int32, the first new token's
    RoPE position. Returns tokens [B, max_new_tokens] (EOS included, garbage after it) and counts [B].
    """
    options = {"sampling": sampling, "eos_ids": eos_ids, "attention_backend": attention_backend}
    tokens, counts, _ = decode_in_place(params, config, cache, logits, position, **options)
    return tokens, counts


@functools.partial(
    jax.jit, static_argnames=("config", "sampling", "eos_ids", "attention_backend"), donate_argnames=("cache",)
)
def decode_in_place(
    params: Params,
    config: LlamaConfig,
    cache: KVCache,
    logits: jax.Array,
    position: jax.Array,
    *,
    sampling: Sampling,
    eos_ids: tuple[int, ...],
    attention_backend: str = "auto",
) -> tuple[jax.Array, jax.Array, KVCache]:
    """`decode`, also returning the cache with the new tokens written. The cache is donated and returned in the same
    buffers, so the decode loop updates it in place: without the output to alias, XLA copies the whole cache into
    the loop once per call (3 GB for the Llama-3-8B shape's merged cache)."""
    b = logits.shape[0]
    n = sampling.max_new_tokens
    eos = jnp.asarray(eos_ids, jnp.int32)

    def pick(logits, i, key):
        if eos_ids:
            banned = i < sampling.min_new_tokens
            logits = logits.at[:, eos].set(jnp.where(banned, -jnp.inf, logits[:, eos]))
        return next_token(logits, key, sampling)

    def cond(state):
        i, done = state[0], state[3]
        return (i < n) & ~jnp.all(done)

    def body(state):
        i, tokens, counts, done, cache, logits, key = state
        key, sub = jax.random.split(key)
        tok = pick(logits, i, sub)  # [B]
        tokens = tokens.at[:, i].set(tok)
        counts = counts + (~done).astype(jnp.int32)
        done = done | jnp.isin(tok, eos)
        out, cache = forward(
            params,
            config,
            tok[:, None],
            (position + i)[:, None],
            cache,
            logits_at=jnp.zeros((b, 1), jnp.int32),
            attention_backend=attention_backend,
        )
        return i + 1, tokens, counts, done, cache, out.logits[:, 0], key

    state = (
        jnp.int32(0),
        jnp.zeros((b, n), jnp.int32),
        jnp.zeros((b,), jnp.int32),
        jnp.zeros((b,), bool),
        cache,
        logits,
        jax.random.key(sampling.seed),
    )
    state = lax.while_loop(cond, body, state)
    return state[1], state[2], state[4]


@functools.partial(jax.jit, static_argnames=("config", "extra", "attention_backend"))
def prefill(params, config, tokens, length, *, extra: int, attention_backend: str = "auto"):
    """Prefill right-padded `tokens` [1, T] of true length `length`; return the last logits [1, V] and a cache with
    `extra` free slots."""
    t = tokens.shape[1]
    out, cache = forward(
        params,
        config,
        tokens,
        jnp.arange(t)[None],
        token_valid=(jnp.arange(t) < length)[None],
        logits_at=jnp.reshape(length - 1, (1, 1)),
        attention_backend=attention_backend,
    )
    return out.logits[:, 0], cache.grow(extra)


def generate_ids(
    params: Params,
    config: LlamaConfig,
    prompt_ids: list[int],
    sampling: Sampling = Sampling(),
    attention_backend: str = "auto",
) -> list[int]:
    """Complete `prompt_ids` and return the new token ids (up to and including EOS if one was produced)."""
    if not prompt_ids:
        raise ValueError("the prompt is empty: give at least one token")
    length = len(prompt_ids)
    padded = -(-length // PROMPT_BUCKET) * PROMPT_BUCKET
    tokens = np.zeros((1, padded), np.int32)
    tokens[0, :length] = prompt_ids
    logits, cache = prefill(
        params,
        config,
        jnp.asarray(tokens),
        jnp.int32(length),
        extra=sampling.max_new_tokens,
        attention_backend=attention_backend,
    )
    out, counts = decode(
        params,
        config,
        cache,
        logits,
        jnp.full((1,), length, jnp.int32),
        sampling=sampling,
        eos_ids=tuple(config.eos_token_ids),
        attention_backend=attention_backend,
    )
    return np.asarray(out[0, : int(counts[0])]).tolist()
