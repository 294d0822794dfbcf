"""The one hashing rule behind every fingerprint, cache key and download check: sha256, in hex, of bytes; JSON
values as `json.dumps(value, sort_keys=True)`, so equal values always hash equal whatever their key order.

Callers decide what identifies their work (params, input files, a model folder, code); this module only says
how that is turned into a hash, so two fingerprints never disagree on the rule.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from humpback.storage.records import atomic_path

BLOCK = 8 << 20  # bytes read per step: memory stays flat whatever the file's size
RACY_SECONDS = 2  # at least the coarsest mtime granularity of common filesystems (FAT's), so a rewrite shows


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


def hash_file(path: str | Path, cache: Path | None = None) -> str:
    """sha256 of one file's bytes. With `cache` (a folder, storage.workdirs.hash_cache()), remembered there by the
    file's identity, (device, inode, size, mtime): a large weight file is read once, not on every run.

    The identity is the rule DVC's own state database and git's index trust: a file rewritten in place or
    replaced gets a new mtime or inode and is read again. Unlike its path, it is shared by every name of the
    file: a hard link or symlink into DVC's cache (`cache.type hardlink` / `symlink`) at another path, in a
    queued experiment's temporary workspace, hits. A copy is another file and is read once: nothing short of
    reading it proves its bytes equal (a hash of a prefix, or of size and mtime, would not). A file modified
    within the last RACY_SECONDS is hashed but not remembered, since a same-size rewrite in the same clock
    tick would keep its mtime (git's "racy clean" rule). One small file per entry, written atomically: two
    processes (two queue workers) never lose or tear each other's entries."""
    if cache is None:
        return hash_files([path])
    stat = Path(path).stat()
    entry = Path(cache) / f"{stat.st_dev:x}-{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}"
    with contextlib.suppress(OSError):
        digest = entry.read_text().strip()
        if len(digest) == 64:
            return digest
    digest = hash_files([path])
    if time.time_ns() - stat.st_mtime_ns > RACY_SECONDS * 10**9:
        with contextlib.suppress(OSError), atomic_path(entry) as tmp:  # a lost entry only costs a re-hash
            tmp.write_text(digest)
    return digest


def hash_folder(folder: str | Path, cache: Path | None = None) -> dict[str, str]:
    """{relative path: sha256} for every file of a folder, sorted; hidden files (editor or temp files) are
    skipped, since they are not part of what the folder holds."""
    folder = Path(folder)
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    return {p.relative_to(folder).as_posix(): hash_file(p, cache) for p in files}
