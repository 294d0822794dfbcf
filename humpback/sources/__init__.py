"""Importers for the three prepare stages: a named source → normalised records + counts.

    prepare_seed(params.data.seed, params.seeds.sampling)             -> (train pairs, held-out pairs, Counts)
    prepare_web(params.data.web, out, params.runtime.web_shard_size)  -> Counts (the segment pool, to `out`)
    prepare_eval(params.data.eval)                        -> (prompt records, Counts)
    prepare_other(params.data.other, training)            -> (held-out pairs, Counts)

A seed or eval reader (one per source, registered below) returns every candidate record and counts what
it drops for reasons of its own (malformed lines, empty answers); a web reader yields documents (or bad
records) that `humpback.sources.web` segments, filters and deduplicates in shards. The functions here
apply the source-independent steps (held-out split, filters, limits) so every source gets them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from humpback.params import EvalDataParams, OtherDataParams, SeedDataParams, WebDataParams
from humpback.sources import (
    alpaca_eval,
    html_files,
    jsonl,
    mtbench,
    oasst1,
    parquet,
    project_faqs,
    python_docs,
    python_faq,
    warc,
    web,
)
from humpback.sources.counts import Counts, SourceError
from humpback.sources.overlap import seen_in_training
from humpback.sources.python_faq import DEFAULT_ROOT
from humpback.sources.sampling import round_robin, sample_indices
from humpback.storage.workdirs import SCRATCH_DIR

# The held-out split is an instrument: fixed, whatever the run's seeds.
SPLIT_SEED = 0

SEED_SOURCES: dict[str, Callable] = {
    "python-faq": python_faq.read_seed,
    "jsonl": jsonl.read_seed,
    "oasst1": oasst1.read_seed,
}
WEB_SOURCES: dict[str, Callable] = {
    "python-docs": python_docs.read_web,
    "jsonl": jsonl.read_web,
    "html": html_files.read_web,
    "warc": warc.read_web,
    "parquet": parquet.read_web,
}
EVAL_SOURCES: dict[str, Callable] = {
    "mt-bench": mtbench.read_eval,
    "jsonl": jsonl.read_eval,
    "alpaca-eval": alpaca_eval.read_eval,
    "project-faqs": project_faqs.read_eval,
}
# Held-out human Q/A from a source the pipeline never trains on: reader(path, counts) -> pairs.
OTHER_SOURCES: dict[str, Callable] = {"project-faqs": project_faqs.read_pairs}


def reader(registry: dict[str, Callable], name: str, kind: str) -> Callable:
    if name not in registry:  # params.py's Literal and these registries must list the same sources
        raise NotImplementedError(
            f"{kind} source '{name}' is not implemented (available: {', '.join(sorted(registry))})"
        )
    return registry[name]


def prepare_seed(params: SeedDataParams, seed: int) -> tuple[list[dict], list[dict], Counts]:
    """All pairs → `params.heldout` held out (never trained on), then `params.limit` of the rest.

    The held-out draw comes first, with a fixed seed, and depends neither on `limit` nor on `seed` (which
    draws the limit's sample): the held-out questions and the dev set never move with an experiment.
    """
    counts = Counts(params.source)
    pairs = reader(SEED_SOURCES, params.source, "seed")(params, counts)
    counts.ensure_any(len(pairs), "pairs")
    if len(pairs) < params.heldout + 1:
        raise SourceError(
            f"{params.source}: {len(pairs)} usable pairs, but data.seed.heldout={params.heldout} needs at "
            f"least {params.heldout + 1} (the held-out pairs plus one to train on)"
        )
    held = set(sample_indices(len(pairs), params.heldout, SPLIT_SEED, "heldout"))
    heldout = [p for i, p in enumerate(pairs) if i in held]
    train = [p for i, p in enumerate(pairs) if i not in held]
    if params.limit and len(train) > params.limit:
        chosen = sample_indices(len(train), params.limit, seed, "limit")
        counts.drop("sampled_out", len(train) - len(chosen))
        train = [train[i] for i in chosen]
    counts.kept = len(train) + len(heldout)
    counts.info.update(train=len(train), heldout=len(heldout))
    return train, heldout, counts


def prepare_web(
    params: WebDataParams, out: str | Path, shard_size: int, scratch_root: str | Path = SCRATCH_DIR
) -> Counts:
    """Segments → filters → corpus dedup: every kept segment to `out` (the pool `web.sample_web` draws from)."""
    read = reader(WEB_SOURCES, params.source, "web")
    root = params.path or (DEFAULT_ROOT if params.source == "python-docs" else "")
    inputs = [Path(root)] if root and Path(root).exists() else []
    return web.prepare_web(params, read, out, shard_size, scratch_root, inputs)


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


def prepare_other(params: OtherDataParams, training: Iterable[dict[str, Any]]) -> tuple[list[dict], Counts]:
    """Every pair of the other source whose question and answer occur nowhere in `training` (seed pairs with
    "instruction" and "output", web segments with "text"); the others are dropped and counted, so the set is
    disjoint from whatever the run trains and curates on (humpback.sources.overlap)."""
    counts = Counts(params.source)
    pairs = reader(OTHER_SOURCES, params.source, "other")(params.path, counts)
    instructions, texts = [], []
    for row in training:
        if "instruction" in row:
            instructions.append(row["instruction"])
        texts.extend(row[k] for k in ("output", "text") if k in row)
    seen = seen_in_training(pairs, instructions, texts)
    for reason in seen.values():
        counts.drop(reason)
    pairs = [p for p in pairs if p["id"] not in seen]
    counts.kept = len(pairs)
    counts.ensure_any(counts.kept, "pairs")
    return pairs, counts


__all__ = ["Counts", "SourceError", "prepare_eval", "prepare_other", "prepare_seed", "prepare_web", "reader"]
