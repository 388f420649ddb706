"""Tokenizing user text safely: a document or a question can never produce a chat control token.

Text that comes from a user (a document, a question, a chat prompt) may contain the literal strings of the
tokenizer's control tokens, such as `<|im_end|>`. A tokenizer parses those into control ids by default, which would
let a document close the user turn and forge an assistant reply. Here the text around the user's part is tokenized
exactly as the tokenizer always does, and every control token whose characters lie in the user's part is replaced
by the plain-text tokens of the same characters. Text without such strings gets exactly the ids it always got.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

Span = tuple[int, int]  # [start, end) character offsets
_MARK = "\x00CONTEXT\x00"


def control_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokenizer's special tokens (BOS/EOS, chat markers, ...): the ids user text must never produce."""
    ids = set(tokenizer.all_special_ids)
    for token_id, token in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(token, "special", False):
            ids.add(token_id)
    return frozenset(ids)


def _plain(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


PARALLEL_MIN_CHARS = 50_000  # longer texts are tokenized in pieces, in parallel, where that gives the same ids
PARALLEL_PIECE_CHARS = 20_000


def _splits_at_spaces(tokenizer) -> bool:
    """Whether the tokenizer's pre-tokenizer always breaks before a single space between two ASCII letters or digits,
    with no normalizer: byte-level BPE (GPT-2 / SmolLM2 style, or a Split regex then ByteLevel as in Llama 3 and
    Qwen2). Then text cut at such a space tokenizes to the same ids piece by piece."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.normalizer is not None or backend.pre_tokenizer is None:
        return False
    spec = json.loads(backend.pre_tokenizer.__getstate__())  # this component's JSON only (cheap)
    parts = spec.get("pretokenizers", [spec]) if spec.get("type") == "Sequence" else [spec]
    kinds = [part.get("type") for part in parts]
    return kinds[-1:] == ["ByteLevel"] and set(kinds) <= {"Split", "ByteLevel"}


def _cut_points(text: str, piece: int) -> list[int]:
    """Positions of single spaces between two ASCII alphanumerics, about `piece` characters apart."""
    cuts, at = [], piece
    while at < len(text) - 1:
        p = at
        while p < len(text) - 1 and not (
            text[p] == " "
            and text[p - 1].isascii()
            and text[p - 1].isalnum()
            and text[p + 1].isascii()
            and text[p + 1].isalnum()
        ):
            p += 1
        if p >= len(text) - 1:
            break
        cuts.append(p)
        at = p + piece
    return cuts


def plain_ids(tokenizer, text: str) -> list[int]:
    """`tokenizer(text)` ids without BOS; long texts in pieces tokenized in parallel (HF's batch encoding runs on
    all cores) when the tokenizer provably gives the same ids that way (`_splits_at_spaces`)."""
    if len(text) < PARALLEL_MIN_CHARS or not _splits_at_spaces(tokenizer):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bounds = [0, *_cut_points(text, PARALLEL_PIECE_CHARS), len(text)]
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    backend = tokenizer.backend_tokenizer  # the Rust tokenizer: the Python wrapper costs more than the encoding
    batch = getattr(backend, "encode_batch_fast", backend.encode_batch)  # _fast: no offsets (tokenizers >= 0.21)
    return [t for enc in batch(pieces, add_special_tokens=False) for t in enc.ids]


def encode(tokenizer, text: str, user: Sequence[Span] | None = None) -> list[int]:
    """Token ids of `text` (no BOS added), where `user` marks the characters that came from a user (default: all).

    Control tokens outside the user spans (the template's own) keep their ids; a control token with any character
    inside a span (even one that straddles the span's edge) is re-encoded as the plain text it was written as.
    """
    if user is None:
        user = [(0, len(text))]
    control = control_ids(tokenizer)
    ids = plain_ids(tokenizer, text)
    if not control.intersection(ids):
        return ids
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # rare: control tokens present
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    out: list[int] = []
    for token_id, (start, end) in zip(ids, offsets, strict=True):
        if token_id in control and any(start < b and a < end for a, b in user):
            out.extend(_plain(tokenizer, text[start:end]))
        else:
            out.append(token_id)
    return out


def fill(template: str, field: str, value: str) -> tuple[str, list[Span]]:
    """`template` with every `field` replaced by `value`, and the spans where `value` now stands."""
    parts = template.split(field)
    text, spans = parts[0], []
    for part in parts[1:]:
        spans.append((len(text), len(text) + len(value)))
        text += value + part
    return text, spans


def chat_frame(tokenizer) -> tuple[str, str]:
    """(head, tail): the chat template's text before and after one user turn, the tail ending with the assistant
    header. A prompt wrapped as chat is head + user text + tail."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": _MARK}], tokenize=False, add_generation_prompt=True
    )
    head, tail = rendered.split(_MARK)
    return head, tail
