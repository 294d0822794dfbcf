"""Self-curation scores: the curator rates a pair on the paper's 5-point rubric.

Two methods (`curate.method`):
- `logprob` (default): the curator's answer is forced to begin with "Score:" and the next-token
  probabilities of 1..5 are read in one forward pass, renormalised over the five. The score is the expected
  value sum(k * p_k) (a graded score that a threshold like 4.5 can cut finely); `argmax` is the likeliest
  digit.
- `generate`: the curator writes its reasoning and "Score: N" as the paper's prompt asks; the score is parsed
  strictly from the last line. A failed parse is resampled with a new seed up to `max_retries` times, then
  recorded as unparsed (score None, never selected): a score is never guessed.

Either way the score is read only from what the model produces after the prompt, never from the pair's text
(web text can contain "Score: 5" or a request to rate itself highly; it is data inside the user turn).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from humpback.engines.tokens import encode_prompts
from humpback.generation import Engine, record_seed
from humpback.params import CurateParams
from humpback.prompts import S_A, SCORE_PREFIX, curation_instruction, format_example

SCORES = (1, 2, 3, 4, 5)
# Strict: the whole (last) line is "Score: N" with N one digit in 1..5, an optional trailing period, any case.
# "Score: 10", "Score: 4/5", "Score: 4 out of 5", "**Score: 4**" are failures, not 1 or 4.
SCORE_LINE = re.compile(r"^\s*score:\s*([1-5])\s*\.?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class PairScore:
    score: float | None  # expected score (logprob) or the parsed score (generate); None when unparsed
    argmax: int | None  # the likeliest digit (logprob) or the parsed score (generate)
    probs: list[float] | None  # P(1..5), renormalised (logprob only)
    raw: str | None  # the curator's text (generate only)
    parsed: bool


def parse_score(text: str) -> int | None:
    """The score on the last non-empty line ("Score: N", N in 1..5), else None."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    match = SCORE_LINE.match(lines[-1])
    return int(match.group(1)) if match else None


def curation_prompt(tokenizer, instruction: str, output: str, tagging: bool, max_pair_chars: int) -> str:
    """The curator's generation prefix for one pair: the rubric in the user turn, with the system prompt the
    curator was trained with on seed pairs (S_a when tagging). The output is cut so the pair's text fits
    `max_pair_chars` (the rubric's context is the model's, not the web page's)."""
    output = output[: max(0, max_pair_chars - len(instruction))]
    user = curation_instruction(instruction, output)
    return format_example(tokenizer, user=user, system=S_A if tagging else None).prompt


def score_read_format(tokenizer) -> tuple[str, list[str]]:
    """How to read P(score) with this tokenizer: (text appended to the prompt, the five candidate strings).

    The model writes "Score: 4". Tokenizers split that differently: GPT-2-style BPE has one token " 4", so the
    read is after "Score:" with candidates " 1".." 5"; SmolLM2 and Llama split digits off ("Score:", " ",
    "4"), where " 1".." 5" would all begin with the same space token, so the read is after "Score: " with
    candidates "1".."5". Take the first layout whose tokens are exactly how "Score: N" is tokenized in context
    and whose five first tokens differ.
    """
    probe = format_example(tokenizer, user="x").prompt
    layouts = ((SCORE_PREFIX, [f" {k}" for k in SCORES]), (SCORE_PREFIX + " ", [str(k) for k in SCORES]))
    for suffix, candidates in layouts:
        base = encode_prompts(tokenizer, [probe + suffix])[0]
        firsts = []
        for candidate in candidates:
            joint = encode_prompts(tokenizer, [probe + suffix + candidate])[0]
            if joint[: len(base)] != base or len(joint) != len(base) + 1:
                break
            firsts.append(joint[-1])
        if len(firsts) == len(SCORES) and len(set(firsts)) == len(SCORES):
            return suffix, candidates
    raise ValueError("cannot read scores with this tokenizer: 'Score: N' does not end in one token per digit")


def score_from_logprobs(logprobs: list[float]) -> PairScore:
    """Renormalise P(1..5) over the five digits → expected score and argmax."""
    top = max(logprobs)
    if top == -math.inf:  # none of the digits among the tokens the server reported
        return PairScore(score=None, argmax=None, probs=None, raw=None, parsed=False)
    weights = [math.exp(lp - top) for lp in logprobs]
    probs = [w / sum(weights) for w in weights]
    expected = sum(k * p for k, p in zip(SCORES, probs))
    argmax = SCORES[max(range(len(SCORES)), key=lambda i: probs[i])]
    return PairScore(score=expected, argmax=argmax, probs=probs, raw=None, parsed=True)


def score_pairs(engine: Engine, pairs: list[dict], params: CurateParams, tagging: bool,
                seed: int) -> list[PairScore]:
    """Rate every pair ({"id", "instruction", "output"}) with the curator behind `engine`."""
    prompts = [
        curation_prompt(engine.tokenizer, p["instruction"], p["output"], tagging, params.max_pair_chars)
        for p in pairs
    ]
    if params.method == "logprob":
        suffix, candidates = score_read_format(engine.tokenizer)
        rows = engine.next_token_logprobs([p + suffix for p in prompts], candidates)
        return [score_from_logprobs(row) for row in rows]

    raws: list[str | None] = [None] * len(pairs)
    scores: list[int | None] = [None] * len(pairs)
    pending = list(range(len(pairs)))
    for attempt in range(params.max_retries + 1):
        if not pending:
            break
        seeds = [record_seed(seed, "curate", pairs[i]["id"], attempt) for i in pending]
        texts = engine.generate([prompts[i] for i in pending], params.max_new_tokens, seeds)
        for i, text in zip(pending, texts):
            raws[i], scores[i] = text, parse_score(text)
        pending = [i for i in pending if scores[i] is None]
    return [
        PairScore(score=None if s is None else float(s), argmax=s, probs=None, raw=r, parsed=s is not None)
        for s, r in zip(scores, raws)
    ]


def is_selected(score: PairScore, threshold: float) -> bool:
    """Keep a pair whose score (expected for logprob, parsed for generate) reaches the threshold."""
    return score.parsed and score.score is not None and score.score >= threshold
