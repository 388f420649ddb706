"""Prompt templates: every chunk is `[BOS] + prefix + chunk text + suffix` (docs/ALGORITHM.md 1.1).

A template is an instruction `prefix` (before the context) and a `suffix` (after it) that holds the question as
`{question}`. With a chat model the whole user turn is wrapped in the tokenizer's chat template, so the chat header
joins the prefix and the assistant header joins the suffix.
"""

from __future__ import annotations

import dataclasses

from pcomp_jax.text import Span, chat_frame, fill

__all__ = ["TEMPLATES", "PromptTemplate", "chat_frame", "get_template"]


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """prefix + context + suffix; either part may contain `{question}`."""

    prefix: str
    suffix: str

    @property
    def needs_question(self) -> bool:
        return "{question}" in self.prefix + self.suffix

    def render(self, question: str) -> tuple[str, str]:
        """(prefix, suffix) with the question filled in (it may appear in either)."""
        return self.prefix.replace("{question}", question), self.suffix.replace("{question}", question)

    def render_spans(self, question: str) -> tuple[tuple[str, list[Span]], tuple[str, list[Span]]]:
        """Like `render`, each part with the character spans the question occupies in it (user text)."""
        return fill(self.prefix, "{question}", question), fill(self.suffix, "{question}", question)


TEMPLATES = {
    "retrieval": PromptTemplate(
        prefix="There is an important piece of information hidden inside the text below. Find it and memorize it.\n\n",
        suffix="\n\nQuestion: {question}\nAnswer using only the text above, in a few words.",
    ),
    "qa": PromptTemplate(
        prefix="You are given a document. Answer the question as concisely as you can, using a single phrase if "
        "possible. Do not provide any explanation.\n\nDocument: ",
        suffix="\n\nNow, answer the question based on the document as concisely as you can.\n\n"
        "Question: {question}\n\nAnswer:",
    ),
    "summarize": PromptTemplate(
        prefix="You are given a document. You will be asked to write a summary of it.\n\nDocument:\n",
        suffix="\n\nNow, write a one-paragraph summary of the document.\n\nSummary:",
    ),
}


def get_template(name_or_template: str | PromptTemplate) -> PromptTemplate:
    if isinstance(name_or_template, PromptTemplate):
        return name_or_template
    if name_or_template not in TEMPLATES:
        raise ValueError(
            f"unknown template {name_or_template!r} (built in: {', '.join(TEMPLATES)}; or pass a PromptTemplate)"
        )
    return TEMPLATES[name_or_template]
