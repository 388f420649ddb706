"""Split a context into chunks and assemble each chunk's tokens (docs/ALGORITHM.md 1.1; the official split: 2.3).

Host-side and exact: the result says which tokens every chunk holds and the static budget they are padded to.
"""

from __future__ import annotations

import dataclasses
import math

from pcomp_jax import text as user_text
from pcomp_jax.errors import InputError
from pcomp_jax.parallelcomp.prompts import PromptTemplate, chat_frame

BUDGET_ROUND = 128  # chunk context budgets are rounded up to this, so nearby lengths share compilations


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class ChunkedPrompt:
    """`[BOS] + prefix + piece + suffix` for every piece; `piece_budget` >= every piece's length (static)."""

    bos: tuple[int, ...]  # () when the tokenizer adds no BOS (Qwen2, SmolLM2), else (bos_id,)
    prefix: tuple[int, ...]
    pieces: tuple[tuple[int, ...], ...]
    suffix: tuple[int, ...]
    piece_budget: int
    tail_len: int = 0  # tokens at the end of the suffix after the question (the chat template's assistant header)

    @property
    def num_chunks(self) -> int:
        return len(self.pieces)

    @property
    def head_len(self) -> int:
        """Tokens before the chunk text: BOS and prefix."""
        return len(self.bos) + len(self.prefix)

    @property
    def context_slots(self) -> int:
        """Static number of cache slots for one chunk's context part (BOS + prefix + piece budget)."""
        return self.head_len + self.piece_budget

    def context_len(self, i: int) -> int:
        return self.head_len + len(self.pieces[i])

    def chunk_len(self, i: int) -> int:
        """len(chunk_ids(i)), without building the list."""
        return self.head_len + len(self.pieces[i]) + len(self.suffix)

    def chunk_ids(self, i: int) -> list[int]:
        return [*self.bos, *self.prefix, *self.pieces[i], *self.suffix]

    def whole_ids(self, context: list[int] | None = None) -> list[int]:
        """The plain single prompt over the whole context (or over `context` tokens instead)."""
        if context is None:
            context = [t for p in self.pieces for t in p]
        return [*self.bos, *self.prefix, *context, *self.suffix]


def _adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def split_chars(text: str, n: int) -> list[str]:
    """n pieces of floor(len/n) characters each, the remainder joined to the last (docs/ALGORITHM.md 2.3)."""
    w = len(text) // n
    return [text[i * w : (i + 1) * w] for i in range(n - 1)] + [text[(n - 1) * w :]]


def _split_chars(tokenizer, context: str, chunk_tokens: int) -> list[list[int]]:
    """The official split: n = ceil(T / chunk_tokens) character pieces of the decoded context, each tokenized."""
    ids = user_text.encode(tokenizer, context)
    count = len(ids) + _adds_bos(tokenizer)  # the official code counts T with the BOS
    text = tokenizer.decode(ids)  # plain-text ids only, so nothing is dropped as a special token
    pieces = split_chars(text, max(1, math.ceil(count / chunk_tokens)))
    return [user_text.encode(tokenizer, p) for p in pieces]


def prompt_from_ids(
    context: list[int], question: list[int], *, chunk_tokens: int, bos: int | None = None
) -> ChunkedPrompt:
    """The token-level prompt: every chunk is `[BOS] + piece + question`, with no instruction or chat template.

    For callers that tokenize themselves, and for benchmarks on random weights, which have no tokenizer."""
    if not question:
        raise InputError("the question is empty: give at least one question token")
    if len(question) > chunk_tokens:
        raise InputError(
            f"the question is {len(question)} tokens, longer than the chunk budget ({chunk_tokens} tokens)"
        )
    pieces = [context[i : i + chunk_tokens] for i in range(0, len(context), chunk_tokens)] or [[]]
    return ChunkedPrompt(
        bos=() if bos is None else (bos,),
        prefix=(),
        pieces=tuple(tuple(int(t) for t in p) for p in pieces),
        suffix=tuple(int(t) for t in question),
        piece_budget=round_up(max(1, max(len(p) for p in pieces)), BUDGET_ROUND),
    )


def check_question(template: PromptTemplate, question: str) -> None:
    """A template that asks a question needs a non-blank one."""
    if template.needs_question and not question.strip():
        raise InputError(
            "the question is empty; give a question (or use a template without {question}, such as 'summarize')"
        )


def chunk_prompt(
    tokenizer,
    context: str,
    question: str,
    template: PromptTemplate,
    *,
    chunk_tokens: int,
    split: str = "tokens",
    chat: bool = False,
) -> ChunkedPrompt:
    """Tokenize and split. An empty context gives one chunk with an empty piece (plain generation)."""
    check_question(template, question)
    if "{question}" in template.prefix:  # the question stands before the context: tokenized with the prefix
        head = _head(tokenizer, template, question, chat)
    else:
        head = _head(tokenizer, template, "", chat)
    document = _document(tokenizer, context, head, chunk_tokens=chunk_tokens, split=split)
    return with_question(document, tokenizer, question, template, chunk_tokens=chunk_tokens, chat=chat)


def document_prompt(
    tokenizer, context: str, template: PromptTemplate, *, chunk_tokens: int, split: str = "tokens", chat: bool = False
) -> ChunkedPrompt:
    """The question-free part of `chunk_prompt`: `[BOS] + prefix + piece` for every piece, with an empty suffix
    (`with_question` adds one). Only for templates whose question stands after the context."""
    if "{question}" in template.prefix:
        raise InputError(
            "this template puts the question before the document, so the document cannot be prefilled without it; "
            "ask one question at a time"
        )
    head = _head(tokenizer, template, "", chat)
    return _document(tokenizer, context, head, chunk_tokens=chunk_tokens, split=split)


def with_question(
    document: ChunkedPrompt,
    tokenizer,
    question: str,
    template: PromptTemplate,
    *,
    chunk_tokens: int,
    chat: bool = False,
) -> ChunkedPrompt:
    """`document` (from `document_prompt`, same template, chunk_tokens and chat) with the question part of
    `template` as every chunk's suffix."""
    check_question(template, question)
    _, (suffix, suffix_user) = template.render_spans(question)
    tail_len = 0
    if chat:
        _, tail = chat_frame(tokenizer)
        tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
        joined = user_text.encode(tokenizer, suffix + tail, suffix_user)
        tail_len = len(tail_ids) if tail_ids and joined[-len(tail_ids) :] == tail_ids else 0
        suffix = suffix + tail
    suffix_ids = user_text.encode(tokenizer, suffix, suffix_user)
    if len(suffix_ids) > chunk_tokens:
        raise InputError(
            f"the question part of the prompt is {len(suffix_ids)} tokens, longer than the chunk budget "
            f"({chunk_tokens} tokens); shorten the question or raise chunk_tokens"
        )
    return dataclasses.replace(document, suffix=tuple(suffix_ids), tail_len=tail_len)


def _head(tokenizer, template: PromptTemplate, question: str, chat: bool) -> tuple[tuple[int, ...], list[int]]:
    """(BOS, prefix ids) of every chunk."""
    prefix, prefix_user = template.render_spans(question)[0]
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise InputError("this tokenizer has no chat template; run without chat")
        head, _ = chat_frame(tokenizer)
        prefix = head + prefix
        prefix_user = [(a + len(head), b + len(head)) for a, b in prefix_user]
    bos = (tokenizer.bos_token_id,) if _adds_bos(tokenizer) else ()
    prefix_ids = user_text.encode(tokenizer, prefix, prefix_user)
    if prefix_ids[:1] == [tokenizer.bos_token_id]:  # the chat template already starts with BOS (Llama 3)
        bos, prefix_ids = (tokenizer.bos_token_id,), prefix_ids[1:]
    return bos, prefix_ids


def _document(tokenizer, context: str, head, *, chunk_tokens: int, split: str) -> ChunkedPrompt:
    bos, prefix_ids = head
    if split == "tokens":
        ids = user_text.encode(tokenizer, context)
        pieces = [ids[i : i + chunk_tokens] for i in range(0, len(ids), chunk_tokens)] or [[]]
    else:
        pieces = _split_chars(tokenizer, context, chunk_tokens) if context else [[]]
    budget = round_up(max(1, max(len(p) for p in pieces)), BUDGET_ROUND)
    return ChunkedPrompt(
        bos=bos, prefix=tuple(prefix_ids), pieces=tuple(tuple(p) for p in pieces), suffix=(), piece_budget=budget
    )
