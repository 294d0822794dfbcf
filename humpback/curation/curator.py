"""Self-curation, the expensive half: a curator scores every augmented pair (and every labelled dev pair, for
curation_quality). Selection (humpback/curation/selection.py) is a separate, cheap stage, so a threshold or cap sweep
never re-scores a pair.

The curator is the model being trained (`curate.model: self`, the paper: m0 for iteration 1, m1 for
iteration 2, prompted with the system prompt it was trained with) or a named model that prepare_curator
converted into models/curator. `curate.method: none` runs no curator: every pair is kept (the paper's
unfiltered baseline), and a cap then keeps a seeded sample.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from statistics import fmean
from typing import TYPE_CHECKING, Any

from humpback.curation import scoring
from humpback.curation.methods import BASELINE, NO_CURATION, writes_text
from humpback.engines.model_folders import is_self
from humpback.storage.records import iter_jsonl

if TYPE_CHECKING:  # for the annotation only: score_augmented imports it when it runs
    from humpback.storage.shards import ShardedRun

# What a score shard's content depends on besides the curator's identity, its tagging and the pairs file: a
# change to any of these re-scores, a change to anything else resumes the shards already written.
SHARD_KEYS = (
    "curate.method",
    "curate.max_pair_chars",
    "curate.max_new_tokens",
    "curate.max_retries",
    "curate.engine",
    "curate.api_model",
    "generation",
    "seeds.generation",
)


def curator_for(own_model: str, named_folder: str | None, tagging: bool) -> tuple[str, bool]:
    """(model folder, tagging) of the curator: the trained model itself with the system prompt it was trained
    with, or the prepared named model (never trained with the project's tags, so none)."""
    if named_folder is None or is_self(named_folder):
        return own_model, tagging
    return named_folder, False


def score_iteration(engine, pairs: list[dict], params, tagging: bool, run) -> tuple[list[dict], dict[str, Any]]:
    """Every pair + its score fields, in input order, scored in resumable shards; and the scoring metrics."""
    method = params.curate.method
    start = time.perf_counter()
    if method == NO_CURATION:
        scored = [
            {**p, "score": None, "score_argmax": None, "probs": None, "raw": None, "parsed": False} for p in pairs
        ]
    else:

        def work(shard: list[dict]) -> list[dict]:
            scores = scoring.score_pairs(engine, shard, params.curate, tagging, params.seeds.generation)
            return [
                {**pair, "score": s.score, "score_argmax": s.argmax, "probs": s.probs, "raw": s.raw, "parsed": s.parsed}
                for pair, s in zip(shard, scores)
            ]

        scored = run.map(
            pairs,
            params.runtime.score_shard_size,
            work,
            desc=f"score ({method})",
            hand_out=getattr(engine, "map_shards", None),
        )  # Ray: `work` runs on its actors
    seconds = time.perf_counter() - start
    parsed = [r["score"] for r in scored if r["parsed"]]
    metrics = {
        "method": method,
        "n": len(scored),
        "parse_failure_rate": round(1 - len(parsed) / len(scored), 4) if scored and parsed else None,
        "mean_score": round(fmean(parsed), 4) if parsed else None,  # on the method's scale
        "seconds": round(seconds, 2),
        "seconds_per_pair": round(seconds / len(scored), 3) if scored else None,
    }
    return scored, metrics


def score_augmented(
    iteration: int, own_model: str, named_curator: str, pairs_path: str, params
) -> tuple[list[dict], dict[str, Any], ShardedRun]:
    """The score stage's work: the iteration's curator (`curator_for`) rates every pair of `pairs_path` in
    resumable shards. Returns the scored pairs, the stage's metrics (with the curator, its tagging and the
    resolved engine settings) and the shard run, to be cleared once the outputs are written."""
    from humpback.engines.factory import make_engine, stage_settings
    from humpback.engines.models import model_identity
    from humpback.storage.shards import ShardedRun, model_shards_key

    pairs = [r for _, r in iter_jsonl(pairs_path, required=("id", "instruction", "output"))]
    curator, tagging = curator_for(own_model, named_curator, params.train.tagging)
    reads_only = not writes_text([params.curate.method])  # picks the precision `auto` means here
    settings = stage_settings(params, "curate", reads_only)  # curate.engine, or generation.engine; `auto` resolved once
    engine = None if params.curate.method == NO_CURATION else make_engine(curator, settings)
    shard_stage = f"score-{iteration}"
    key = model_shards_key(
        shard_stage, {**params.values(SHARD_KEYS), "tagging": tagging}, model_identity(curator), [pairs_path]
    )
    shards = ShardedRun(shard_stage, key)
    scored, scoring_metrics = score_iteration(engine, pairs, params, tagging, shards)
    metrics = {"iteration": iteration, "curator": curator, "tagged": tagging, **scoring_metrics}
    metrics["resolved"] = settings.resolved()
    return scored, metrics, shards


def methods_to_run(params) -> list[str]:
    """The length baseline, the configured curate.method (unless none), then curation_quality.methods."""
    configured = [] if params.curate.method == NO_CURATION else [params.curate.method]
    ordered = [BASELINE, *configured, *params.curation_quality.methods]
    return list(dict.fromkeys(ordered))


class ReadOnce:
    """An engine wrapper that runs each forward-pass read once: `rubric_calibrated` reads the same P(1..5) as
    `logprob`, and `likelihood_gain` the same answer log-likelihoods as `pmi`, so the second method of each
    pair costs nothing here (its s/pair shows ~0; run alone, it costs what its partner does)."""

    def __init__(self, engine):
        self._engine = engine
        self._next: dict[tuple, list[float]] = {}
        self._completion: dict[tuple, list[float]] = {}

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def next_token_logprobs(self, prompts: list[str], candidates: list[str], **kw) -> list[list[float]]:
        keys = [(p, tuple(candidates)) for p in prompts]
        todo = [i for i, k in enumerate(keys) if k not in self._next]
        if todo:
            rows = self._engine.next_token_logprobs([prompts[i] for i in todo], candidates, **kw)
            self._next.update({keys[i]: row for i, row in zip(todo, rows)})
        return [self._next[k] for k in keys]

    def completion_logprobs(self, prompts: list[str], completions: list[str], **kw) -> list[list[float]]:
        keys = list(zip(prompts, completions))
        todo = [i for i, k in enumerate(keys) if k not in self._completion]
        if todo:
            rows = self._engine.completion_logprobs([prompts[i] for i in todo], [completions[i] for i in todo], **kw)
            self._completion.update({keys[i]: row for i, row in zip(todo, rows)})
        return [self._completion[k] for k in keys]


def score_dev_set(
    engine, rows: Sequence[dict[str, Any]], params, tagging: bool, methods: Sequence[str] | None = None, log=None
) -> list[dict]:
    """Every dev row + {"by_method": {method: {"score", "parsed", "seconds_per_pair"}}}: the expensive half
    (the curator's reads), independent of any threshold."""
    methods = list(methods or methods_to_run(params))
    engine = ReadOnce(engine)
    scored = [dict(r, by_method={}) for r in rows]
    for method in methods:
        start = time.perf_counter()
        scores = scoring.score_pairs(
            engine,
            list(rows),
            params.curate,
            tagging=tagging,
            seed=params.seeds.generation,
            method=method,
            desc=f"score_dev {method}",
        )
        per_pair = round((time.perf_counter() - start) / len(rows), 4) if rows else None
        for row, s in zip(scored, scores):
            row["by_method"][method] = {
                "score": s.score,
                "argmax": s.argmax,
                "parsed": s.parsed,
                "seconds_per_pair": per_pair,
            }
        if log is not None:
            log.info("%-18s %.2f s/pair", method, per_pair or 0.0)
    return scored
