"""Seed source `oasst1`: OpenAssistant Conversations, selected exactly as Li et al. (2023) did.

The paper's seed: the first turn of each conversation tree (the root prompter message), in English, with
its rank-0 assistant reply (the answer human rankers liked best). `data.seed.path` empty reads
`OpenAssistant/oasst1` (train split) through `datasets`; otherwise a local copy of its files: one
`.parquet` / `.jsonl` / `.jsonl.gz` file, or a folder of them, in the released message schema (one message
per row: message_id, parent_id, message_tree_id, role, lang, rank, text, ...). Point it at the train
file(s) to match the paper.

Counting: `read` is the number of conversation trees (root prompts); each is kept or dropped as
`language`, `no_rank0_answer` (no assistant reply of rank 0: unranked or unanswered trees), `deleted`,
`empty_instruction` or `empty_output`. Other messages (later turns, lower-ranked replies) are not
records; their total is reported as `messages`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from humpback.params import SeedDataParams
from humpback.sources.counts import Counts, SourceError
from humpback.storage.records import RecordError

HUB_ID = "OpenAssistant/oasst1"
COLUMNS = ("message_id", "parent_id", "message_tree_id", "role", "lang", "rank", "text")
SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")


def read_seed(params: SeedDataParams, counts: Counts) -> list[dict[str, Any]]:
    roots: dict[str, dict] = {}  # first turns, by message id, in file order
    best: dict[str, dict] = {}  # rank-0 assistant replies, by parent id
    for where, row in messages(params.path):
        counts.note("messages")
        try:
            _check(row, where)
        except RecordError:
            if params.on_bad_record == "error":
                raise
            counts.read += 1  # a message we cannot place: counted as one record, malformed
            counts.drop("malformed")
            continue
        if row["parent_id"] is None and row["role"] == "prompter":
            roots[row["message_id"]] = row
        elif row["role"] == "assistant" and row["rank"] == 0:
            best[row["parent_id"]] = row
    pairs = []
    for root in roots.values():
        counts.read += 1
        answer = best.get(root["message_id"])
        if params.language and root["lang"] != params.language:
            counts.drop("language")
        elif answer is None:
            counts.drop("no_rank0_answer")
        elif root.get("deleted") or answer.get("deleted"):
            counts.drop("deleted")
        elif not root["text"].strip():
            counts.drop("empty_instruction")
        elif not answer["text"].strip():
            counts.drop("empty_output")
        else:
            pairs.append(
                {
                    "id": f"oasst1/{root['message_tree_id']}",
                    "instruction": root["text"].strip(),
                    "output": answer["text"].strip(),
                    "source": "oasst1",
                }
            )
    return pairs


def messages(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, message) for every message of the hub split or the local files."""
    if not path:
        yield from _hub()
        return
    for file in _files(Path(path)):
        if file.name.endswith(".parquet"):
            yield from _parquet(file)
        else:
            yield from _jsonl(file)


def _hub() -> Iterator[tuple[str, dict[str, Any]]]:
    import datasets  # imported here: slow to import, and only the hub path needs it

    try:
        split = datasets.load_dataset(HUB_ID, split="train")
    except Exception as exc:  # noqa: BLE001 (offline, gated, renamed: many types) say what was tried, and the way round
        raise SourceError(
            f"oasst1: cannot load {HUB_ID} from the hub ({type(exc).__name__}: {exc}); download its "
            "parquet files and set data.seed.path to them"
        ) from None
    for i, row in enumerate(split):
        yield f"{HUB_ID}[{i}]", row


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceError(f"data.seed.path: no such file or folder: {path} (source 'oasst1')")
    files = sorted(p for p in path.rglob("*") if p.name.endswith(SUFFIXES) and p.is_file())
    if not files:
        raise SourceError(f"data.seed.path: no {', '.join(SUFFIXES)} files under {path}")
    return files


def _parquet(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    missing = [c for c in COLUMNS if c not in file.schema_arrow.names]
    if missing:
        raise SourceError(
            f"{path}: not oasst1's message schema: missing column(s) {', '.join(missing)} "
            f"(expected {', '.join(COLUMNS)})"
        )
    columns = [*COLUMNS, *(["deleted"] if "deleted" in file.schema_arrow.names else [])]
    row = 0
    for batch in file.iter_batches(batch_size=4096, columns=columns):
        for message in batch.to_pylist():
            yield f"{path}: row {row}", message
            row += 1


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield f"{path}:{lineno}", json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"{path}:{lineno}", {"_error": f"not valid JSON ({exc.msg})"}


def _check(row: dict[str, Any], where: str) -> None:
    if "_error" in row:
        raise RecordError(f"{where}: {row['_error']}")
    for name in COLUMNS:
        if name not in row:
            raise RecordError(f"{where}: missing field '{name}' (oasst1 message schema: {', '.join(COLUMNS)})")
    for name in ("message_id", "message_tree_id", "role", "lang", "text"):
        if not isinstance(row[name], str):
            raise RecordError(f"{where}: field '{name}' must be a string, got {type(row[name]).__name__}")
    if row["parent_id"] is not None and not isinstance(row["parent_id"], str):
        raise RecordError(f"{where}: field 'parent_id' must be a string or null")
    rank = row["rank"]
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, float))):
        raise RecordError(f"{where}: field 'rank' must be a number or null, got {type(rank).__name__}")
