"""Deterministic selections: the same inputs and seed always pick the same records, in input order."""

from __future__ import annotations

import random
from collections.abc import Sequence


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
