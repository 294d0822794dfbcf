"""Deterministic selections: the same inputs and seed always pick the same records, in input order."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from humpback.storage.records import atomic_path, iter_jsonl


def sample_indices(n: int, k: int, seed: int, salt: str) -> list[int]:
    """`k` of `range(n)` chosen with `seed`, sorted. `salt` keeps different draws (heldout, limit) apart."""
    if k >= n:
        return list(range(n))
    # A string seed is hashed with SHA-512, so the draw is stable across runs and Python versions.
    return sorted(random.Random(f"{seed}:{salt}").sample(range(n), k))


def round_robin(keys: Sequence[str], k: int) -> list[int]:
    """The first `k` indices taking one from each key in turn (keys in order of first appearance).

    A small limit then still covers every category: with 8 categories and k=16, two of each.
    """
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < min(k, len(keys)):
        for members in groups.values():
            if depth < len(members) and len(chosen) < k:
                chosen.append(members[depth])
        depth += 1
    return sorted(chosen)


def sample_web(pool: str | Path, limit: int, seed: int, out: str | Path) -> dict:
    """`limit` segments of the web pool (0 = all), drawn with `seed`, in pool order, streamed to `out`: the same
    draw a list-based run makes. Separate from extraction, so a data-size sweep never re-reads the corpus.
    Returns the counts (read = kept + sampled_out)."""
    with open(pool, encoding="utf-8") as f:
        read = sum(1 for line in f if line.strip())
    if read == 0:
        raise ValueError(f"{pool}: the web pool is empty: nothing to sample")
    chosen = set(sample_indices(read, limit, seed, "web")) if limit else set(range(read))
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rank, (_, row) in enumerate(iter_jsonl(pool, required=("id", "text"))):
            if rank in chosen:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"read": read, "kept": len(chosen), "dropped": {"sampled_out": read - len(chosen)}}
