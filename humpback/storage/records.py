"""JSONL, JSON and CSV files: strict reading with file/line/field errors, atomic writing.

A stage writes its outputs completely or not at all (temp file in the same folder + `os.replace`), so a
killed stage never leaves a half-written file that DVC could mistake for a result.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal


class RecordError(ValueError):
    """A malformed input record: the message names the file, the line and what was expected."""


def iter_jsonl(
    path: str | Path,
    required: Iterable[str] = (),
    on_bad_record: Literal["error", "skip"] = "error",
    dropped: dict[str, int] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) from a JSONL file.

    A line that is not a JSON object or lacks a required string field raises `RecordError`, or with
    `on_bad_record="skip"` is counted in `dropped["malformed"]`. Blank lines are ignored (not records).
    """
    required = list(required)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise RecordError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
                for name in required:
                    if name not in record:
                        raise RecordError(f"{path}:{lineno}: missing field '{name}'")
                    if not isinstance(record[name], str):
                        raise RecordError(
                            f"{path}:{lineno}: field '{name}' must be a string, got {type(record[name]).__name__}"
                        )
            except (json.JSONDecodeError, RecordError) as exc:
                if on_bad_record == "error":
                    if isinstance(exc, RecordError):
                        raise
                    raise RecordError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                if dropped is not None:
                    dropped["malformed"] = dropped.get("malformed", 0) + 1
                continue
            yield lineno, record


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file the pipeline wrote itself (errors are bugs, so they are never skipped)."""
    return [record for _, record in iter_jsonl(path)]


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; on success rename it into place, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600 files; give outputs the permissions a plain open() would (0666 - umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(out: str | Path) -> Iterator[Path]:
    """Yield a fresh hidden folder beside `out`; on success it replaces `out` by a rename, on error it is removed.

    A model folder is many files written over seconds or minutes: a run killed halfway must not leave a
    folder that DVC (or a later stage) could take for a finished model.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # A folder cannot be renamed onto a non-empty one: move the old one aside first, then drop it.
    old = tmp.with_suffix(".old") if out.exists() else None
    if old is not None:
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records atomically, one JSON object per line; return how many were written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON document atomically (metrics, cards, alpaca_eval outputs)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a small table atomically as CSV (the data behind `dvc plots`)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
