"""Tokenizing user text safely: a document or a question can never produce a chat control token.

Text that comes from a user (a document, a question, a chat prompt) may contain the literal strings of the
tokenizer's control tokens, such as `<|im_end|>`. A tokenizer parses those into control ids by default, which would
let a document close the user turn and forge an assistant reply. Here the text around the user's part is tokenized
exactly as the tokenizer always does, and every control token whose characters lie in the user's part is replaced
by the plain-text tokens of the same characters. Text without such strings gets exactly the ids it always got.
"""

from __future__ import annotations

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


def encode(tokenizer, text: str, user: Sequence[Span] | None = None) -> list[int]:
    """Token ids of `text` (no BOS added), where `user` marks the characters that came from a user (default: all).

    Control tokens outside the user spans (the template's own) keep their ids; a control token with any character
    inside a span (even one that straddles the span's edge) is re-encoded as the plain text it was written as.
    """
    if user is None:
        user = [(0, len(text))]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    control = control_ids(tokenizer)
    if not control.intersection(ids):
        return list(ids)
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
