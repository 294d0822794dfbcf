"""The generic `jsonl` source for seed, web and eval data: one JSON object per line, fields named in params.

Ids are `<file name>:<line>` so they are stable for a given file. A line that is not a JSON object or
lacks a field raises `RecordError` naming file, line and field, or with `on_bad_record: skip` is counted
under `dropped.malformed` (and in `read`: it was a record, just not a usable one).

Web rows are whole documents (e.g. FineWeb's `text`), which have no HTML headers to anchor on: each row
is cut into blocks of whole paragraphs up to `max_chars` (`humpback.sources.segment.text_segments`) and the
text filters apply as for HTML; the header filters do not (there is no header).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from humpback.params import EvalDataParams, SeedDataParams, WebDataParams
from humpback.sources.counts import Counts, SourceError
from humpback.sources.documents import BadRecord, Document
from humpback.storage.records import RecordError, iter_jsonl


def read_seed(params: SeedDataParams, counts: Counts) -> list[dict[str, Any]]:
    fields = (params.instruction_field, params.output_field)
    pairs = []
    for lineno, row in records(params.path, "data.seed", fields, params.on_bad_record, counts):
        counts.read += 1
        instruction, output = row[fields[0]].strip(), row[fields[1]].strip()
        if not instruction:
            counts.drop("empty_instruction")
        elif not output:
            counts.drop("empty_output")
        else:
            pairs.append(
                {
                    "id": _id(params.path, lineno),
                    "instruction": instruction,
                    "output": output,
                    "source": "jsonl",
                }
            )
    return pairs


def read_web(params: WebDataParams) -> Iterator[Document | BadRecord]:
    """Each row a text document; a malformed line (skip mode) a `BadRecord` in its place in the stream."""
    path = _check_path(params.path, "data.web")
    bad: dict[str, int] = {}
    reported = 0
    try:
        for lineno, row in iter_jsonl(path, [params.text_field], params.on_bad_record, bad):
            while reported < bad.get("malformed", 0):  # lines skipped just before this one
                reported += 1
                yield BadRecord(f"{path} before line {lineno}", "malformed")
            yield Document(f"{Path(path).name}:{lineno}", "jsonl/", "text", row[params.text_field])
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for _ in range(bad.get("malformed", 0) - reported):
        yield BadRecord(f"{path} at the end", "malformed")


def read_eval(params: EvalDataParams, counts: Counts) -> list[dict[str, Any]]:
    prompts = []
    for lineno, row in records(params.path, "data.eval", [params.instruction_field], params.on_bad_record, counts):
        counts.read += 1
        instruction = row[params.instruction_field].strip()
        if not instruction:
            counts.drop("empty_instruction")
            continue
        category = row.get("category")
        prompts.append(
            {
                "id": _id(params.path, lineno),
                "instruction": instruction,
                "dataset": "jsonl",
                "category": category if isinstance(category, str) else "",
            }
        )
    return prompts


def records(
    path: str, key: str, fields: Iterable[str], on_bad_record: str, counts: Counts
) -> Iterator[tuple[int, dict[str, Any]]]:
    """`iter_jsonl`, with malformed lines (skip mode) also counted as read so the counts reconcile."""
    _check_path(path, key)
    bad: dict[str, int] = {}
    try:
        yield from iter_jsonl(path, fields, on_bad_record, bad)
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    counts.read += bad.get("malformed", 0)
    counts.drop("malformed", bad.get("malformed", 0))


def _check_path(path: str, key: str) -> str:
    if not path:
        raise SourceError(f"{key}.path must name a JSONL file for source 'jsonl'")
    if not Path(path).is_file():
        raise SourceError(f"{key}.path: file not found: {path}")
    return path


def _id(path: str, lineno: int) -> str:
    return f"jsonl/{Path(path).name}:{lineno}"
