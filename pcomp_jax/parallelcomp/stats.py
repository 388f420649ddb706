"""What `Result.stats` holds: a typed dictionary, so the keys are documented and checked by type checkers while the
value stays a plain dict (JSON as is, for `--json` and the evaluation reports).

Every answer has `method`, `empty_context` and `host_seconds`; the rest depends on the method and the path.
Seconds are wall time on the host, rounded to milliseconds; in a batch of documents (`batch` present) the prefill
and decode times are the whole batch's.
"""

from __future__ import annotations

from typing import TypedDict


class Stats(TypedDict, total=False):
    # every answer
    method: str  # "parallelcomp", "full", "truncate" or "streaming"
    empty_context: bool  # the context was empty or whitespace (the question was answered alone)
    host_seconds: float  # tokenizing and chunking before the first device work
    # ParallelComp
    read_whole: bool  # present when a question-free prompt was checked (whole_when_fits): True if read in one pass
    num_chunks: int
    kept_chunks: list[int]  # the chunks kept, in document order
    chunk_tokens: list[int]  # each chunk's context tokens
    chunk_budget: int  # the chunk size used (the model's preset when not set)
    keep_margin: float | None  # the keep margin used (ParallelCompConfig.keep_margin; None: exactly keep_chunks)
    shared_head: bool  # the chunks' common head read once (ParallelCompConfig.shared_head)
    nll_bias: float | None  # kept chunks weighed by their question NLL (ParallelCompConfig.nll_bias; None: equals)
    chunk_scores: list[float]  # each chunk's question NLL (lower: more relevant), in document order
    head_tokens: int  # BOS and prompt prefix before each chunk's context
    question_tokens: int
    cache_tokens_per_layer: list[int]  # tokens in the merged cache after the question, per layer (fewest KV head)
    question_position: int  # the position the question starts at
    peak_chunk_caches: int  # chunk caches alive at once (kept buffer + a group): flat in context length
    chunk_batch: int  # chunks prefilled together (the choice when not set)
    prefill_groups: int
    prefill_rows: int  # token rows computed in the chunk groups, padding included
    prefill_seconds: float  # from the first device work to the logits of the first answer token
    decode_seconds: float
    first_token_seconds: float  # host + prefill
    batch: int  # documents answered in the same call
    # staged (a document prefilled once, then questions)
    staged: bool
    document_cache: str  # where the document's chunk caches are kept: "device", "host" or "recompute"
    document_cache_bytes: int
    document_seconds: float  # the document's prefill
    # single-pass baselines
    prompt_tokens: int
    context_tokens: int
    kept_context_tokens: int  # truncate: the context tokens that fit the window
    seconds: float
