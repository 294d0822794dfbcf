"""Duplicates across the whole corpus: exact (a hash of the text) and near (MinHash + LSH, datasketch).

A segment is checked against every segment kept before it, in corpus order, so the first copy is kept and
later copies are dropped as `duplicate` or `near_duplicate`. Near-duplicates are pages that differ in a
date, a counter or a sentence of boilerplate: word 5-gram shingles whose estimated Jaccard similarity
reaches `data.web.near_duplicate` collide in at least one LSH band. As in large-scale dedup pipelines,
an LSH candidate is taken as a duplicate without storing every MinHash to re-check it, and each LSH band is
stored as a 64-bit hash of its MinHash values (datasketch's `hashfunc`; 11 values, 88 bytes, at the default
threshold): two different bands share a key with probability 2^-64. That and the bucket sets are the
memory per kept segment (docs/web-input.md has the measured figure).
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
from datasketch import MinHash, MinHashLSH

NUM_PERM = 64
SHINGLE = 5  # words per shingle, as the repetition filter
# Odd 32-bit multipliers combining a shingle's word hashes into one (a polynomial hash over words).
_MULTIPLIERS = np.array([0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1], dtype=np.uint64)


def shingle_hashes(text: str) -> np.ndarray:
    """32-bit hashes of the text's word 5-grams (lowercased), computed in numpy rather than one by one.

    crc32 is stable across processes (Python's `hash` is salted per run), so results are reproducible.
    """
    codes = np.array(list(map(zlib.crc32, text.lower().encode("utf-8").split())), dtype=np.uint64)
    if len(codes) < SHINGLE:
        return codes if len(codes) else np.zeros(1, dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(codes, SHINGLE)
    return np.unique((windows * _MULTIPLIERS).sum(axis=1) & 0xFFFFFFFF)


def band_key(band: bytes) -> int:
    """An LSH band's key: one 64-bit int instead of 8 bytes per MinHash value in the band. Python's own bytes
    hash (SipHash, in C: blake2b here showed in prepare_web's profile,
    docs/web-input.md "Figures behind the code's comments").
    It is salted per process, which changes nothing: the index lives and dies within one run, and a collision
    needs probability 2^-64."""
    return hash(band)


class Deduplicator:
    """`check(text)` → "duplicate", "near_duplicate" or None (and then remembers the text as kept)."""

    def __init__(self, near_threshold: float):
        self.exact: set[bytes] = set()
        self.lsh = (
            MinHashLSH(threshold=near_threshold, num_perm=NUM_PERM, hashfunc=band_key) if near_threshold > 0 else None
        )
        self._template = MinHash(num_perm=NUM_PERM, seed=1, hashfunc=int)
        self._next = 0

    def minhash(self, text: str) -> MinHash:
        m = self._template.copy()
        m.update_batch(shingle_hashes(text).tolist())
        return m

    def check(self, text: str) -> str | None:
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=12).digest()
        if digest in self.exact:
            return "duplicate"
        if self.lsh is not None:
            m = self.minhash(text)
            if self.lsh.query(m):
                return "near_duplicate"
            self.lsh.insert(self._next, m, check_duplication=False)
            self._next += 1
        self.exact.add(digest)
        return None
