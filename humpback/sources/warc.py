"""Web source `warc`: WARC files, the format ClueWeb and Common Crawl ship, read with FastWARC.

`data.web.path` is one `.warc` / `.warc.gz` file or a folder of them (sorted). Only `response` records are
documents (requests, metadata and warcinfo are protocol, not pages). A response that is not HTML (images,
PDFs, redirects without a body) is counted as `not_html`; it is not an error, crawls are full of them.

A truncated record (a download cut short, a damaged gzip member) is detected by comparing the bytes that
are really there with the record's declared `Content-Length`: FastWARC itself yields such a record with
whatever bytes it found. It raises `RecordError` naming the file and the record's byte offset, or under
`on_bad_record: skip` is counted as `truncated`, and reading goes on with the next record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fastwarc.warc import ArchiveIterator, WarcRecordType

from humpback.params import WebDataParams
from humpback.sources.counts import SourceError
from humpback.sources.documents import BadRecord, Document, bad_record, html_document

SUFFIXES = (".warc", ".warc.gz")
HTML_TYPES = {"text/html", "application/xhtml+xml"}


def warc_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceError(f"data.web.path: no such file or folder: {path} (source 'warc' needs WARC files)")
    files = sorted(p for p in path.rglob("*") if p.name.endswith(SUFFIXES) and p.is_file())
    if not files:
        raise SourceError(f"data.web.path: no {' or '.join(SUFFIXES)} files under {path}")
    return files


def read_web(params: WebDataParams) -> Iterator[Document | BadRecord]:
    if not params.path:
        raise SourceError("data.web.path must name a WARC file or a folder of them for source 'warc'")
    for path in warc_files(params.path):
        yield from read_warc(path, params.on_bad_record)


def read_warc(path: Path, on_bad_record: str) -> Iterator[Document | BadRecord]:
    with open(path, "rb") as stream:
        # parse_http=False: the HTTP block is parsed only after the truncation check (see the docstring).
        for record in ArchiveIterator(stream, record_types=WarcRecordType.response, parse_http=False):
            where = f"{path}: record at byte {record.stream_pos}"
            declared = record.headers.get("Content-Length")
            record.freeze()  # reads the whole block, so content_length is now what is really there
            if declared is None or not declared.isdigit() or int(declared) != record.content_length:
                yield bad_record(
                    on_bad_record, "truncated",
                    f"{where}: truncated WARC record (Content-Length {declared}, "
                    f"{record.content_length} bytes present)",
                )
                continue
            try:
                record.parse_http(auto_decode="all")
            except OSError as exc:
                yield bad_record(on_bad_record, "malformed", f"{where}: invalid HTTP response ({exc})")
                continue
            uri = record.headers.get("WARC-Target-URI") or f"{path.name}@{record.stream_pos}"
            if (record.http_content_type or "").lower() not in HTML_TYPES:
                yield BadRecord(where, "not_html")
                continue
            yield html_document(record.reader.read(), uri, "warc/", where, on_bad_record,
                                record.http_charset)
