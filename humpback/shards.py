"""Resumable, sharded work for the long generation stages (augment, curate).

Input records are cut into fixed shards of `shard_size` in input order. Each finished shard is written
atomically to `.humpback/scratch/<stage>-<fingerprint>/shard-00000.jsonl`; a rerun after a crash or a kill
skips the shards already there. The fingerprint covers everything that decides a shard's content (stage,
params sections, model weights, input file), so a scratch folder is never reused for different work. With
per-record seeds a record's result does not depend on its shard or batch, so a resumed run writes the same
bytes as an uninterrupted one. The stage writes its outputs from the returned rows, then calls `clear()`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from humpback.records import atomic_path, read_jsonl, write_jsonl
from humpback.workdirs import HASH_CACHE, SCRATCH_DIR

# ------------------------------------------------------------------------------------------- fingerprints


def file_md5(path: str | Path, cache_file: Path = HASH_CACHE) -> str:
    """DVC-style md5 of a file's bytes, cached by (size, mtime): a 500 MB weight file is read once, not on
    every run.

    Size and mtime alone would miss a file rewritten in place with the same size within a second; the cache
    only saves re-reading a file whose stat is unchanged since its bytes were hashed.
    """
    path = Path(path).resolve()
    stat = path.stat()
    key, stamp = str(path), [stat.st_size, stat.st_mtime_ns]
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if cache.get(key, {}).get("stat") == stamp:
        return cache[key]["md5"]
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            md5.update(block)
    cache[key] = {"stat": stamp, "md5": md5.hexdigest()}
    try:  # a lost cache entry only costs a re-hash next time
        with atomic_path(cache_file) as tmp:
            tmp.write_text(json.dumps(cache, indent=0))
    except OSError:
        pass
    return cache[key]["md5"]


def folder_md5(folder: str | Path) -> dict[str, str]:
    """{relative path: md5} for every file of a folder (hidden files, e.g. editor or temp files, skipped)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return {str(p.relative_to(folder)): file_md5(p) for p in files}


def model_identity(model_dir: str | Path) -> dict[str, Any]:
    """The content of a model folder, and of its base model when it is a LoRA adapter."""
    # Imported here: modeling pulls in torch and transformers, which prepare_web (no model) should not pay for.
    from humpback.modeling import adapter_base, is_adapter

    identity: dict[str, Any] = {"model": folder_md5(model_dir)}
    if is_adapter(model_dir):
        identity["base"] = folder_md5(adapter_base(model_dir))
    return identity


def fingerprint(stage: str, params: dict[str, Any], model_dir: str | Path, inputs: list[str | Path]) -> str:
    """sha256 over the stage name, its params sections, the model's content and the input files' content."""
    blob = json.dumps(
        {"stage": stage, "params": params, "model": model_identity(model_dir),
         "inputs": [file_md5(p) for p in inputs]},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


# ------------------------------------------------------------------------------------------------ shards


class ShardedRun:
    """The scratch folder of one stage run: `map` does the missing shards, `clear` drops the folder."""

    def __init__(self, stage: str, fingerprint: str, root: Path = SCRATCH_DIR):
        self.root, self.stage = Path(root), stage
        self.folder = self.root / f"{stage}-{fingerprint[:16]}"

    def shard_path(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.jsonl"

    def map(self, records: list[dict], shard_size: int, work: Callable[[list[dict]], list[dict]],
            desc: str = "") -> list[dict]:
        """work(shard) for every shard not yet in scratch; all shards' rows, in input order."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        self._drop_stale()
        shards = [records[i: i + shard_size] for i in range(0, len(records), shard_size)]
        done = [self.shard_path(k).is_file() for k in range(len(shards))]
        resumed = sum(len(s) for s, d in zip(shards, done) if d)
        if resumed:
            tqdm.write(f"{self.stage}: resuming, {sum(done)} of {len(shards)} shards already done "
                       f"in {self.folder}", file=sys.stderr)
        rows: list[dict] = []
        with tqdm(total=len(records), initial=resumed, desc=desc or self.stage, unit="rec") as bar:
            for k, shard in enumerate(shards):
                if done[k]:
                    rows.extend(read_jsonl(self.shard_path(k)))
                    continue
                result = work(shard)
                write_jsonl(self.shard_path(k), result)
                rows.extend(result)
                bar.update(len(shard))
        return rows

    def _drop_stale(self) -> None:
        """Scratch of this stage under another fingerprint (older params, model or input) is dead weight."""
        for other in self.root.glob(f"{self.stage}-*"):
            if other != self.folder and other.is_dir() and other.name[len(self.stage) + 1:].isalnum():
                shutil.rmtree(other, ignore_errors=True)

    def clear(self) -> None:
        """Call after the stage's outputs are written: the scratch is no longer needed."""
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            os.rmdir(self.root)  # only when empty: other stages may have scratch of their own
        except OSError:
            pass
