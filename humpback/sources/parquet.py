"""Web source `parquet`: rows of plain text (FineWeb and most hub corpora ship this way), read with pyarrow.

`data.web.path` is one `.parquet` file or a folder of them (sorted). Files are streamed batch by batch and
only `data.web.text_field` is read, so a multi-GB shard never sits in memory. Each row is one document,
cut into paragraph blocks (`humpback.sources.segment.text_segments`); ids are `<file>:<row>` (row from 0).

A file without the text column is a `RecordError` naming the file and its columns, or under
`on_bad_record: skip` all its rows are counted as `malformed`; a null or non-string value likewise, row by row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from humpback.params import WebDataParams
from humpback.sources.counts import SourceError
from humpback.sources.documents import BadRecord, Document, bad_record

BATCH_ROWS = 1024


def parquet_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceError(f"data.web.path: no such file or folder: {path} (source 'parquet' needs .parquet files)")
    files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not files:
        raise SourceError(f"data.web.path: no .parquet files under {path}")
    return files


def read_web(params: WebDataParams) -> Iterator[Document | BadRecord]:
    if not params.path:
        raise SourceError("data.web.path must name a Parquet file or a folder of them for source 'parquet'")
    for path in parquet_files(params.path):
        yield from read_parquet(path, params.text_field, params.on_bad_record)


def read_parquet(path: Path, field: str, on_bad_record: str) -> Iterator[Document | BadRecord]:
    # imported here: every stage imports the sources package through the stage runner, and pyarrow takes a
    # noticeable part of a stage's start
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file ({exc})") from None
    names = file.schema_arrow.names
    if field not in names:
        yield bad_record(
            on_bad_record,
            "malformed",
            f"{path}: no column '{field}' (data.web.text_field); columns: {', '.join(names)}",
            n=file.metadata.num_rows,
        )
        return
    row = 0
    for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=[field]):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str):
                yield Document(f"{path.name}:{row}", "parquet/", "text", value)
            else:
                yield bad_record(
                    on_bad_record,
                    "malformed",
                    f"{path}: row {row}: column '{field}' must be a string, got {type(value).__name__}",
                )
            row += 1
