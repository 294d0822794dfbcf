"""The one hashing rule behind every fingerprint, cache key and download check: sha256, in hex, of bytes; JSON
values as `json.dumps(value, sort_keys=True)`, so equal values always hash equal whatever their key order.

Callers decide what identifies their work (params, input files, a model folder, code); this module only says
how that is turned into a hash, so two fingerprints never disagree on the rule.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from humpback.records import atomic_path

BLOCK = 8 << 20  # bytes read per step: memory stays flat whatever the file's size


def hash_text(text: str) -> str:
    """sha256 of a string's UTF-8 bytes: for identities already spelled as one string."""
    return hashlib.sha256(text.encode()).hexdigest()


def hash_json(value: Any) -> str:
    """sha256 of a JSON value with sorted keys: the fingerprint of a record of what decides some work."""
    return hash_text(json.dumps(value, sort_keys=True))


def hash_files(paths: Iterable[str | Path], sink: IO[bytes] | None = None) -> str:
    """sha256 of the files' bytes, concatenated in the order given; every block is also written to `sink` when
    one is given, so a file assembled from parts is checked in the same pass that writes it."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as source:
            while block := source.read(BLOCK):
                digest.update(block)
                if sink is not None:
                    sink.write(block)
    return digest.hexdigest()


def hash_file(path: str | Path, cache_file: Path | None = None) -> str:
    """sha256 of one file's bytes. With `cache_file`, remembered there by (resolved path, size, mtime): a
    500 MB weight file is read once, not on every run; a rewritten file has a new mtime and is read again."""
    if cache_file is None:
        return hash_files([path])
    path = Path(path).resolve()
    stat = path.stat()
    key, stamp = str(path), [stat.st_size, stat.st_mtime_ns]
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if cache.get(key, {}).get("stat") == stamp:
        return cache[key]["sha256"]
    cache[key] = {"stat": stamp, "sha256": hash_files([path])}
    try:  # a lost cache entry only costs a re-hash next time
        with atomic_path(cache_file) as tmp:
            tmp.write_text(json.dumps(cache, indent=0))
    except OSError:
        pass
    return cache[key]["sha256"]


def hash_folder(folder: str | Path, cache_file: Path | None = None) -> dict[str, str]:
    """{relative path: sha256} for every file of a folder, sorted; hidden files (editor or temp files) are
    skipped, since they are not part of what the folder holds."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return {p.relative_to(folder).as_posix(): hash_file(p, cache_file) for p in files}
