"""The judge-free instruments: how likely a model finds held-out human answers, and paired comparisons.

For each held-out (question, human answer) pair the model reads the question exactly as it is prompted at
inference (`prompts.format_example` with `system_for_inference(respond.system_prompt)`, as the respond stage
builds it: the inference prompt is part of the condition under test, not of the instrument; docs/instruments.md)
and the answer, cut at `likelihood.max_chars` characters, in the place of its own reply. A pair's
value is the mean log-probability per answer token (nats); a model's value is the mean over pairs, so that
every pair weighs the same and two models are compared pair by pair. The end-of-turn marker is not scored: a
cut answer does not end there, and scoring it for whole answers only would mix two things.

Per-token values compare models that share a tokenizer (base, M0, M1, M2 do); across tokenizers, compare
`logprob_sum / chars` instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from humpback.prompts import SystemPrompt, end_of_turn_token, format_example, system_for_inference
from humpback.statistics import bootstrap_mean_interval

# The two instruments, by the held-out set they read (names as they appear in metrics and comparisons).
SEED_HELDOUT = "loglik_seed"  # held-out pairs of the seed's own source (data/seed_heldout.jsonl)
OTHER_SOURCE = "loglik_other"  # pairs of a source the pipeline never reads (data.other)


def scored_texts(
    tokenizer, pairs: Sequence[dict], system_prompt: SystemPrompt, max_chars: int
) -> tuple[list[str], list[str]]:
    """(prompts, completions): each question as the model is prompted with it, each answer as its reply."""
    system = system_for_inference(system_prompt)
    eot = end_of_turn_token(tokenizer)
    prompts, completions = [], []
    for pair in pairs:
        formatted = format_example(
            tokenizer, user=pair["instruction"], system=system, response=pair["output"][:max_chars].rstrip()
        )
        completion = formatted.completion
        if eot and completion.endswith(eot):
            completion = completion[: -len(eot)]
        prompts.append(formatted.prompt)
        completions.append(completion)
    return prompts, completions


def answer_likelihoods(
    engine, pairs: Sequence[dict], system_prompt: SystemPrompt, max_chars: int, desc: str = ""
) -> dict[str, Any]:
    """{"n", "mean", "tokens", "items": [{"id", "logprob", "tokens", "logprob_sum", "chars"}]}: `logprob`
    is a pair's mean log-probability per answer token, `mean` the mean of `logprob` over pairs."""
    if not pairs:
        raise ValueError("no held-out pairs to score")
    prompts, completions = scored_texts(engine.tokenizer, pairs, system_prompt, max_chars)
    rows = engine.completion_logprobs(prompts, completions, desc=desc)
    items = []
    for pair, completion, lps in zip(pairs, completions, rows):
        if not lps:
            raise ValueError(f"pair {pair['id']}: its answer has no tokens to score")
        items.append(
            {
                "id": pair["id"],
                "logprob": sum(lps) / len(lps),
                "tokens": len(lps),
                "logprob_sum": sum(lps),
                "chars": len(completion),
            }
        )
    return {
        "n": len(items),
        "mean": sum(i["logprob"] for i in items) / len(items),
        "tokens": sum(i["tokens"] for i in items),
        "items": items,
    }


def paired_difference(
    a: Mapping[str, float], b: Mapping[str, float], resamples: int, seed: int
) -> dict[str, float | int]:
    """Mean of a − b over the same questions, with a paired bootstrap 95% percentile interval (seeded).

    Paired: each resample draws questions, and a question brings both models' values, so what the
    questions share (an easy answer is easy for every model) cancels out of the interval."""
    import numpy as np

    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ValueError(
            f"paired comparison needs the same questions on both sides; {len(only)} differ, e.g. {only[0]!r}"
        )
    if not a:
        raise ValueError("paired comparison of no questions")
    ids = sorted(a)
    diff = np.array([a[i] - b[i] for i in ids], dtype=float)
    low, high = bootstrap_mean_interval(diff, resamples, seed)
    return {"difference": float(diff.mean()), "ci_low": float(low), "ci_high": float(high), "n": len(diff)}


def item_values(result: Mapping[str, Any]) -> dict[str, float]:
    """{pair id: logprob} of one instrument's result (as `answer_likelihoods` returns it)."""
    return {item["id"]: item["logprob"] for item in result["items"]}


def compare_models(
    results: Mapping[str, Mapping[str, Any]], pairs: Sequence[tuple[str, str]], resamples: int, seed: int
) -> dict[str, dict[str, dict[str, float | int]]]:
    """{"<a>_vs_<b>": {instrument: paired_difference(a, b)}} for every (a, b) in `pairs` and every instrument
    both models were measured on. `results[model]` is a likelihood stage output: {"instruments": {name:
    answer_likelihoods(...)}}."""
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for a, b in pairs:
        shared = sorted(set(results[a]["instruments"]) & set(results[b]["instruments"]))
        out[f"{a}_vs_{b}"] = {
            name: paired_difference(
                item_values(results[a]["instruments"][name]),
                item_values(results[b]["instruments"][name]),
                resamples,
                seed,
            )
            for name in shared
        }
    return out
