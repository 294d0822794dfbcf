"""Importers for the three prepare stages: a named source → normalised records + counts.

    prepare_seed(params.data.seed, params.base.seed) -> (train pairs, held-out pairs, Counts)
    prepare_web(params.data.web, params.base.seed)   -> (segment records, Counts)
    prepare_eval(params.data.eval)                   -> (prompt records, Counts)

A reader (one per source, registered below) yields every candidate record and counts what it drops for
reasons of its own (malformed lines, empty answers); the functions here apply the source-independent
steps (held-out split, segment filters, limits) so every source gets them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from humpback.params import EvalDataParams, SeedDataParams, WebDataParams
from humpback.segment import filter_segments
from humpback.sources import jsonl, mtbench, python_docs, python_faq
from humpback.sources.counts import Counts, SourceError
from humpback.sources.sampling import round_robin, sample_indices

SEED_SOURCES: dict[str, Callable] = {"python-faq": python_faq.read_seed, "jsonl": jsonl.read_seed}
WEB_SOURCES: dict[str, Callable] = {"python-docs": python_docs.read_web, "jsonl": jsonl.read_web}
EVAL_SOURCES: dict[str, Callable] = {"mt-bench": mtbench.read_eval, "jsonl": jsonl.read_eval}


def reader(registry: dict[str, Callable], name: str, kind: str) -> Callable:
    if name not in registry:  # params.py already accepts the hub sources (oasst1, warc...): a later issue
        raise NotImplementedError(
            f"{kind} source '{name}' is not implemented yet (available: {', '.join(sorted(registry))})"
        )
    return registry[name]


def prepare_seed(params: SeedDataParams, seed: int) -> tuple[list[dict], list[dict], Counts]:
    """All pairs → `params.heldout` held out (never trained on), then `params.limit` of the rest.

    The held-out draw comes first and does not depend on `limit`, so the curation dev set stays the same
    when a data-size experiment changes the limit.
    """
    counts = Counts(params.source)
    pairs = reader(SEED_SOURCES, params.source, "seed")(params, counts)
    counts.ensure_any(len(pairs), "pairs")
    if len(pairs) < params.heldout + 1:
        raise SourceError(
            f"{params.source}: {len(pairs)} usable pairs, but data.seed.heldout={params.heldout} needs at "
            f"least {params.heldout + 1} (the held-out pairs plus one to train on)"
        )
    held = set(sample_indices(len(pairs), params.heldout, seed, "heldout"))
    heldout = [p for i, p in enumerate(pairs) if i in held]
    train = [p for i, p in enumerate(pairs) if i not in held]
    if params.limit and len(train) > params.limit:
        chosen = sample_indices(len(train), params.limit, seed, "limit")
        counts.drop("sampled_out", len(train) - len(chosen))
        train = [train[i] for i in chosen]
    counts.kept = len(train) + len(heldout)
    counts.info.update(train=len(train), heldout=len(heldout))
    return train, heldout, counts


def prepare_web(params: WebDataParams, seed: int) -> tuple[list[dict], Counts]:
    """Segments → filters (counted by reason) → a deterministic sample of `params.limit` (0 = all)."""
    counts = Counts(params.source)

    def read_all():
        for segment in reader(WEB_SOURCES, params.source, "web")(params, counts):
            counts.read += 1
            yield segment

    kept = list(filter_segments(read_all(), params.min_chars, params.max_chars, counts.dropped))
    if params.limit and len(kept) > params.limit:
        chosen = sample_indices(len(kept), params.limit, seed, "web")
        counts.drop("sampled_out", len(kept) - len(chosen))
        kept = [kept[i] for i in chosen]
    counts.kept = len(kept)
    counts.ensure_any(counts.kept, "segments")
    return [segment.record() for segment in kept], counts


def prepare_eval(params: EvalDataParams) -> tuple[list[dict[str, Any]], Counts]:
    """Prompts → the first `params.limit` taken round-robin over categories (0 = all)."""
    counts = Counts(params.source)
    prompts = reader(EVAL_SOURCES, params.source, "eval")(params, counts)
    if params.limit and len(prompts) > params.limit:
        chosen = round_robin([p["category"] for p in prompts], params.limit)
        counts.drop("over_limit", len(prompts) - len(chosen))
        prompts = [prompts[i] for i in chosen]
    counts.kept = len(prompts)
    counts.ensure_any(counts.kept, "prompts")
    return prompts, counts


__all__ = ["Counts", "SourceError", "prepare_eval", "prepare_seed", "prepare_web", "reader"]
