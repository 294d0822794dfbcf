"""Is a held-out pair disjoint from the text a model is trained or curated on?

A held-out question counts as seen when, after normalisation (Unicode NFKC, case, punctuation and spacing),
it equals a training instruction or occurs inside any training text (an instruction, a seed answer, a web
segment); its answer counts as seen when its first ANSWER_WORDS words occur inside a training text. Both
exact copies and copies that differ in markup or spacing are caught by the one normalised comparison.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

ANSWER_WORDS = 12  # long enough that a shared phrase ("for more information see the") is not a copy

_NON_WORD = re.compile(r"[\W_]+")


def normalize(text: str) -> str:
    """Lower-case words separated by single spaces: what survives reformatting and re-punctuation."""
    return " ".join(_NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def seen_in_training(pairs: Sequence[dict], instructions: Iterable[str], texts: Iterable[str]) -> dict[str, str]:
    """{pair id: reason} for every held-out pair whose question or answer occurs in the training data.

    `instructions` are training questions (compared whole and as text), `texts` everything else a model
    reads (seed answers, web segments)."""
    questions = {normalize(q) for q in instructions}
    # One string, each text padded with spaces (so a match starts and ends at word boundaries) and joined by
    # a newline, which no normalised text contains (so a match never spans two texts).
    corpus = "\n".join(f" {t} " for t in [*questions, *(normalize(t) for t in texts)])
    seen: dict[str, str] = {}
    for pair in pairs:
        question = normalize(pair["instruction"])
        answer_head = " ".join(normalize(pair["output"]).split()[:ANSWER_WORDS])
        if question in questions:
            seen[pair["id"]] = "question_is_a_training_instruction"
        elif question and f" {question} " in corpus:
            seen[pair["id"]] = "question_in_training_text"
        elif len(answer_head.split()) == ANSWER_WORDS and f" {answer_head} " in corpus:
            seen[pair["id"]] = "answer_in_training_text"
    return seen
