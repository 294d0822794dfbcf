"""The curation methods: each declared once, here. Everything else derives from this table: the params schema
(`curate.method`, `curate.threshold.<method>`), how `scoring.score_pairs` reads a pair, the threshold sweeps of
curation_quality, the histograms of the select stage and the methods table in docs/curation.md.

Adding a method: one `CurationMethod` entry below, its reader in `curation/scoring.py` (keyed by `read`) if it needs a
new kind of read, and its threshold in params.yaml. Nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How a method reads a pair from the curator (curation/scoring.py has one reader per kind):
#   rubric_next_token  the paper's rubric, answer forced to "Score:", P(1..5) of the next token
#   rubric_generate    the paper's rubric, the curator writes reasoning + "Score: N", N parsed
#   yes_no_next_token  a yes/no question, P(Yes) vs P(No) of the reply's first token
#   answer_likelihood  log p(answer | instruction) and log p(answer | no instruction), per answer token
Read = Literal["rubric_next_token", "rubric_generate", "yes_no_next_token", "answer_likelihood"]


@dataclass(frozen=True)
class CurationMethod:
    name: str
    read: Read
    scale: str  # what the score means, for docs and plots
    default_threshold: float  # keep a pair whose score >= this (params.yaml may move it)
    histogram: Literal["digits", "continuous"]  # digits: pairs per likeliest/parsed score 1..5
    sweep: tuple[float, ...]  # thresholds curation_quality reports precision / recall at
    summary: str


METHODS: dict[str, CurationMethod] = {
    m.name: m
    for m in (
        CurationMethod(
            "logprob",
            "rubric_next_token",
            "expected rubric score, 1..5",
            3.0,
            "digits",
            (2.0, 3.0, 3.5, 4.0, 4.5, 5.0),
            'paper\'s rubric, answer forced to "Score:", expected score from P(1..5)',
        ),
        CurationMethod(
            "generate",
            "rubric_generate",
            "parsed rubric score, 1..5",
            3.0,
            "digits",
            (2.0, 3.0, 4.0, 5.0),
            'paper\'s rubric, the curator writes reasoning + "Score: N", N parsed strictly',
        ),
        CurationMethod(
            "rubric_calibrated",
            "rubric_next_token",
            "log (P(4)+P(5)) / (P(1)+P(2)), nats",
            0.0,
            "continuous",
            (-2.0, -1.0, 0.0, 1.0, 2.0),
            "the logprob read scored as how much likelier good (4-5) than bad (1-2)",
        ),
        CurationMethod(
            "yes_no",
            "yes_no_next_token",
            "P(Yes) / (P(Yes)+P(No)), 0..1",
            0.5,
            "continuous",
            (0.1, 0.3, 0.5, 0.7, 0.9),
            '"Is the answer a good, helpful response?" read from the first token',
        ),
        CurationMethod(
            "likelihood_gain",
            "answer_likelihood",
            "nats per answer token",
            0.1,
            "continuous",
            (0.0, 0.05, 0.1, 0.2, 0.4),
            "log p(answer | instruction) - log p(answer | no instruction), per token",
        ),
        CurationMethod(
            "pmi",
            "answer_likelihood",
            "nats",
            10.0,
            "continuous",
            (0.0, 5.0, 10.0, 20.0, 40.0),
            "the same difference summed over the answer's tokens",
        ),
    )
}

NAMES: tuple[str, ...] = tuple(METHODS)
# `curate.method: none` keeps every augmented pair at both iterations without running a curator: the
# paper's unfiltered baseline.
NO_CURATION = "none"
# curation_quality's baseline row: the answer's length in characters; every method must beat it.
BASELINE = "length"


def method(name: str) -> CurationMethod:
    if name not in METHODS:
        raise ValueError(f"unknown curation method '{name}' (known: {', '.join(NAMES)})")
    return METHODS[name]


def writes_text(names: list[str] | tuple[str, ...]) -> bool:
    """Whether any of these methods has the curator write (decode) rather than only read likelihoods: it
    decides which precision `auto` picks on CPUs (engines/factory.stage_settings)."""
    return any(n in METHODS and METHODS[n].read == "rubric_generate" for n in names)


def methods_table() -> list[str]:
    """The methods table for docs/curation.md, generated so the docs never disagree with the code."""
    lines = ["| method | what it reads | scale | default threshold |", "|---|---|---|---|"]
    lines += [f"| `{m.name}` | {m.summary} | {m.scale} | {m.default_threshold:g} |" for m in METHODS.values()]
    return lines
