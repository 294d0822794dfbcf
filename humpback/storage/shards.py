"""Resumable, sharded work: the one runner for every stage that can be killed mid-way (prepare_web, augment,
score).

Input records are cut into fixed shards of `shard_size` in input order. Each finished shard is written
atomically to `.humpback/scratch/<stage>-<fingerprint>/shard-00000.jsonl` (and, for work that counts what it
drops, its counts to `shard-00000.counts.json` first: the rows file marks the shard done); a rerun after a crash
or a kill skips the shards already there. The fingerprint covers everything that decides a shard's content, so
a scratch folder is never reused for different work. With per-record seeds a record's result does not depend
on its shard or batch, so a resumed run writes the same bytes as an uninterrupted one. The stage writes its
outputs from the rows, then calls `clear()`.

Two ways in: `map` for a list held in memory (the rows come back as a list), `stream` for input too large to
hold (documents read lazily; the rows stay in scratch and are read back with `rows`, the shards' counts come
back).

Who does a shard's work is the `hand_out`: by default `work(shard)` here, one shard after another; under
`runtime.cluster: ray` the engine's `map_shards` (humpback/engines/ray_cluster.py), which runs `work` on Ray
actors holding the engine, several shards at once, the results back in input order. Either way this process
writes every finished shard, so resume, counts and bytes do not depend on who computed them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import count, islice
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from humpback.storage.hashing import hash_file, hash_json
from humpback.storage.records import iter_jsonl, read_jsonl, write_json, write_jsonl
from humpback.storage.workdirs import SCRATCH_DIR, hash_cache

T = TypeVar("T")
# How shards reach their work: map(work, shards) → work's results in the shards' order, consumed lazily.
HandOut = Callable[[Callable[[Any], Any], Iterator[Any]], Iterable[Any]]


def model_shards_key(stage: str, params: dict[str, Any], model: dict[str, Any], inputs: list[str | Path]) -> str:
    """Identifies a model stage's shards: the stage, the params it reads, the model's content
    (`humpback.engines.models.model_identity`, taken by the caller so the runner never imports torch) and its
    inputs'."""
    return hash_json(
        {"stage": stage, "params": params, "model": model, "inputs": [hash_file(p, hash_cache()) for p in inputs]}
    )


class ShardedRun:
    """The scratch folder of one stage run: `map` or `stream` do the missing shards, `clear` drops the folder."""

    def __init__(self, stage: str, key: str, root: str | Path = SCRATCH_DIR):
        self.root, self.stage = Path(root), stage
        self.folder = self.root / f"{stage}-{key[:16]}"
        self.worked: list[int] = []  # the shards the last `map` or `stream` computed (the others were resumed)

    def shard_path(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.jsonl"

    def counts_path(self, index: int) -> Path:
        return self.folder / f"shard-{index:05d}.counts.json"

    def map(
        self,
        records: list[dict],
        shard_size: int,
        work: Callable[[list[dict]], list[dict]],
        desc: str = "",
        hand_out: HandOut | None = None,
    ) -> list[dict]:
        """work(shard) for every shard not yet in scratch (through `hand_out`, default here and in order); all
        shards' rows, in input order."""
        rows: list[dict] = []
        for k, result in self._shards(
            records, shard_size, _with_no_counts(work), desc or self.stage, "rec", total=len(records), hand_out=hand_out
        ):
            rows.extend(read_jsonl(self.shard_path(k)) if result is None else result[0])
        return rows

    def stream(
        self,
        items: Iterable[T],
        shard_size: int,
        work: Callable[[list[T]], tuple[list[dict], dict]],
        desc: str = "",
        unit: str = "rec",
        check: Callable[[list[dict]], None] | None = None,
    ) -> list[dict]:
        """work(shard) → (rows, counts) for every shard of `items` not yet in scratch, reading `items` one shard at
        a time (finished shards' items are still read, to know where the next shard begins); every shard's
        counts, in order. `check(counts so far)` runs after each shard, so bad input stops the run early."""
        all_counts: list[dict] = []
        for k, result in self._shards(items, shard_size, work, desc or self.stage, unit):
            all_counts.append(json.loads(self.counts_path(k).read_text()) if result is None else result[1])
            if check is not None:
                check(all_counts)
        return all_counts

    def rows(self, n_shards: int) -> Iterator[dict]:
        """The rows of the first `n_shards` shards, in input order, read from scratch one at a time."""
        for k in range(n_shards):
            for _, row in iter_jsonl(self.shard_path(k)):
                yield row

    def lines(self, n_shards: int) -> Iterator[str]:
        """The same rows as `rows`, as their JSONL lines (newline included), undecoded: to copy rows into an
        output in `write_jsonl`'s format without parsing and re-encoding every one."""
        for k in range(n_shards):
            with open(self.shard_path(k), encoding="utf-8") as f:
                yield from (line for line in f if line.strip())

    def _shards(
        self,
        items: Iterable[T],
        shard_size: int,
        work: Callable[[list[T]], tuple[list[dict], Any]],
        desc: str,
        unit: str,
        total: int | None = None,
        hand_out: HandOut | None = None,
    ) -> Iterator[tuple[int, tuple[list[dict], Any] | None]]:
        """(index, work's (rows, counts)) per shard in input order, None for a shard already in scratch. A new
        shard's counts (when not None) are written before its rows: the rows file marks the shard done.

        The shards still to do go to `hand_out(work, shards)`, which pulls them lazily (the builtin `map`: one
        at a time, each written before the next is read; a cluster's: as many ahead as it has workers) and
        gives their results in the same order; the shards already done are yielded in their places."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        self._drop_stale()
        stream = iter(items)
        self.worked = []
        read: deque[tuple[int, int, bool]] = deque()  # (index, size, done before) of the shards read so far

        def todo() -> Iterator[list[T]]:
            for k in count():
                shard = list(islice(stream, shard_size))
                if not shard:
                    return
                done = self.shard_path(k).is_file()  # finished before a crash or kill: keep it
                read.append((k, len(shard), done))
                if not done:
                    if not self.worked and k:
                        tqdm.write(f"{self.stage}: resuming, {k} shards already done in {self.folder}", file=sys.stderr)
                    self.worked.append(k)
                    yield shard

        pending = todo()
        with tqdm(total=total, desc=desc, unit=unit) as bar:
            for rows, counts in (hand_out or map)(work, pending):
                while read[0][2]:  # the shards done before, up to this one
                    k, size, _ = read.popleft()
                    bar.update(size)
                    yield k, None
                k, size, _ = read.popleft()
                if counts is not None:
                    write_json(self.counts_path(k), counts)
                write_jsonl(self.shard_path(k), rows)
                bar.update(size)
                yield k, (rows, counts)
            for _ in pending:  # the hand-out has read every shard; this reads none
                raise AssertionError(f"{self.stage}: the hand-out left a shard undone")
            while read:  # the shards done before, after the last one worked
                k, size, _ = read.popleft()
                bar.update(size)
                yield k, None
                if not self.worked and not read:
                    tqdm.write(f"{self.stage}: all {k + 1} shards were already done in {self.folder}", file=sys.stderr)

    def _drop_stale(self) -> None:
        """Scratch of this stage under another fingerprint (older params, code, model or input) is dead weight."""
        for other in self.root.glob(f"{self.stage}-*"):
            if other != self.folder and other.is_dir() and other.name[len(self.stage) + 1 :].isalnum():
                shutil.rmtree(other, ignore_errors=True)

    def clear(self) -> None:
        """Call after the stage's outputs are written: the scratch is no longer needed."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # only when empty: other stages may have scratch of their own
            os.rmdir(self.root)


def _with_no_counts(work: Callable[[list[dict]], list[dict]]) -> Callable[[list[dict]], tuple[list[dict], None]]:
    """`map`'s work as `_shards` takes it, (rows, no counts); a module-level function, so that it pickles for a
    cluster's hand-out."""
    return functools.partial(_no_counts, work)


def _no_counts(work: Callable[[list[dict]], list[dict]], shard: list[dict]) -> tuple[list[dict], None]:
    return work(shard), None
