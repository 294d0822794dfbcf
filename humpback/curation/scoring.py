"""Curation scores: how a curator rates an (instruction, answer) pair. One entry point, `score_pairs`, used by
the curate stage and by curation_quality, so the dev-set figures are those of the code that selects.

Methods (`curate.method`; each has its own threshold in `curate.threshold.<method>`, on the scale below):
- `logprob` (the paper's rubric, forced read): the curator's answer is forced to begin with "Score:" and the
  next-token probabilities of 1..5 are read in one forward pass, renormalised over the five. The score is the
  expected value sum(k * p_k), 1..5; `argmax` is the likeliest digit.
- `generate` (the paper's rubric, as the paper runs it): the curator writes its reasoning and "Score: N"; the
  score is parsed strictly from the last line, 1..5. A failed parse is resampled with a new seed up to
  `max_retries` times, then recorded as unparsed (score None, never selected): a score is never guessed.
- `rubric_calibrated`: the same read as `logprob`, scored as log (P(4)+P(5)) / (P(1)+P(2)) in nats: how much
  more likely the curator rates the pair good than bad. It ignores 3 and the position of the mass within
  each side, which a small model's expected score mixes with its general preference for middle digits.
- `yes_no`: a short prompt (prompts.YES_NO_PROMPT) asks whether the answer is a good response; the score is
  P(Yes) / (P(Yes) + P(No)) of the reply's first token, 0..1. No rubric to understand, one token to read.
- `likelihood_gain` (instruction-following-difficulty style): the mean per-token log-likelihood of the answer
  as the reply to its instruction minus that as the reply to an empty user turn, in nats per token. An answer
  its instruction explains scores high; an off-topic answer, page chrome or chatter scores near 0.
- `pmi`: the same difference summed over the answer's tokens (the pointwise mutual information of
  instruction and answer under the model), in nats: also grows with how much on-topic content there is.
- `length` (curation_quality's baseline only): the answer's characters; every method must beat it.

The curator only ever reads what the model produces after the prompt (or the likelihood of the pair's own
text), never a score written in the pair's text: web text can contain "Score: 5" or a request to rate itself
highly; it is data inside the user turn.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from humpback.engines.base import Engine, record_seed
from humpback.engines.tokens import encode_prompts
from humpback.params import CurateParams
from humpback.prompts import (
    NO_INSTRUCTION,
    S_A,
    SCORE_PREFIX,
    YES_NO_CANDIDATES,
    curation_prompt,
    cut_output,
    format_example,
    yes_no_prompt,
)

SCORES = (1, 2, 3, 4, 5)
BASELINE = "length"
# A log-ratio with one side at zero probability (a server that reports only its top tokens) is capped here, so
# scores stay finite numbers in JSON and still rank first or last.
MAX_LOG_RATIO = 50.0
# Strict: the whole (last) line is "Score: N" with N one digit in 1..5, an optional trailing period, any case.
# "Score: 10", "Score: 4/5", "Score: 4 out of 5", "**Score: 4**" are failures, not 1 or 4.
SCORE_LINE = re.compile(r"^\s*score:\s*([1-5])\s*\.?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class PairScore:
    score: float | None  # on the method's scale (module docstring); None when unparsed
    argmax: int | None  # rubric methods: the likeliest digit (forced reads) or the parsed score (generate)
    probs: list[float] | None  # P(1..5), renormalised (logprob, rubric_calibrated)
    raw: str | None  # the curator's text (generate only)
    parsed: bool


def parse_score(text: str) -> int | None:
    """The score on the last non-empty line ("Score: N", N in 1..5), else None."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    match = SCORE_LINE.match(lines[-1])
    return int(match.group(1)) if match else None


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


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top if top == -math.inf else top + math.log(sum(math.exp(v - top) for v in values))


def _capped(x: float) -> float:
    return max(-MAX_LOG_RATIO, min(MAX_LOG_RATIO, x))


def calibrated_from_logprobs(logprobs: list[float]) -> PairScore:
    """log (P(4)+P(5)) - log (P(1)+P(2)) of a rubric read; the probabilities are kept as for `logprob`."""
    read = score_from_logprobs(logprobs)
    if not read.parsed:
        return read
    ratio = _logsumexp(logprobs[3:]) - _logsumexp(logprobs[:2])
    return PairScore(score=_capped(ratio), argmax=read.argmax, probs=read.probs, raw=None, parsed=True)


def yes_no_from_logprobs(log_yes: float, log_no: float) -> PairScore:
    """P(Yes) / (P(Yes) + P(No)); unparsed when neither token was reported."""
    if log_yes == -math.inf and log_no == -math.inf:
        return PairScore(score=None, argmax=None, probs=None, raw=None, parsed=False)
    diff = _capped(log_no - log_yes)
    return PairScore(score=1.0 / (1.0 + math.exp(diff)), argmax=None, probs=None, raw=None, parsed=True)


def likelihood_gain(with_instruction: list[float], without: list[float], total: bool) -> PairScore:
    """The answer's log-likelihood with its instruction minus without, summed (pmi) or per token."""
    if not with_instruction or len(with_instruction) != len(without):
        return PairScore(score=None, argmax=None, probs=None, raw=None, parsed=False)
    gain = sum(with_instruction) - sum(without)
    score = gain if total else gain / len(with_instruction)
    return PairScore(score=score, argmax=None, probs=None, raw=None, parsed=math.isfinite(score))


def score_pairs(
    engine: Engine,
    pairs: list[dict],
    params: CurateParams,
    tagging: bool,
    seed: int,
    method: str | None = None,
    desc: str = "",
) -> list[PairScore]:
    """Rate every pair ({"id", "instruction", "output"}) with the curator behind `engine`, by `method`
    (default `params.method`; "length" is the baseline and needs no engine). `desc`: the label of the engine's
    progress bar (stderr), "" for none (a caller that draws its own, as the sharded score stage)."""
    method = method or params.method
    tok = getattr(engine, "tokenizer", None)
    if method == BASELINE:
        return [PairScore(float(len(p["output"])), None, None, None, True) for p in pairs]
    if method in ("logprob", "rubric_calibrated"):
        prompts = [curation_prompt(tok, p["instruction"], p["output"], tagging, params.max_pair_chars) for p in pairs]
        suffix, candidates = score_read_format(tok)
        rows = engine.next_token_logprobs([p + suffix for p in prompts], candidates, desc=desc)
        read = score_from_logprobs if method == "logprob" else calibrated_from_logprobs
        return [read(row) for row in rows]
    if method == "yes_no":
        prompts = [yes_no_prompt(tok, p["instruction"], p["output"], tagging, params.max_pair_chars) for p in pairs]
        rows = engine.next_token_logprobs(prompts, list(YES_NO_CANDIDATES), desc=desc)
        return [yes_no_from_logprobs(*row) for row in rows]
    if method in ("likelihood_gain", "pmi"):
        system = S_A if tagging else None
        conditioned, unconditioned = [], []
        for p in pairs:
            output = cut_output(p["instruction"], p["output"], params.max_pair_chars)
            conditioned.append(format_example(tok, user=p["instruction"], response=output, system=system))
            unconditioned.append(format_example(tok, user=NO_INSTRUCTION, response=output, system=system))
        both = conditioned + unconditioned
        rows = engine.completion_logprobs([f.prompt for f in both], [f.completion for f in both], desc=desc)
        n = len(pairs)
        return [likelihood_gain(rows[i], rows[n + i], total=method == "pmi") for i in range(n)]
    if method != "generate":
        raise ValueError(f"curate.method: unknown method '{method}'")

    prompts = [curation_prompt(tok, p["instruction"], p["output"], tagging, params.max_pair_chars) for p in pairs]

    raws: list[str | None] = [None] * len(pairs)
    scores: list[int | None] = [None] * len(pairs)
    pending = list(range(len(pairs)))
    for attempt in range(params.max_retries + 1):
        if not pending:
            break
        seeds = [record_seed(seed, "curate", pairs[i]["id"], attempt) for i in pending]
        texts = engine.generate([prompts[i] for i in pending], params.max_new_tokens, seeds, desc=desc)
        for i, text in zip(pending, texts):
            raws[i], scores[i] = text, parse_score(text)
        pending = [i for i in pending if scores[i] is None]
    return [
        PairScore(score=None if s is None else float(s), argmax=s, probs=None, raw=r, parsed=s is not None)
        for s, r in zip(scores, raws)
    ]


def is_selected(score: PairScore, threshold: float) -> bool:
    """Keep a pair whose score (on its method's scale) reaches the threshold; never an unparsed pair."""
    return score.parsed and score.score is not None and score.score >= threshold
