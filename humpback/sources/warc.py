"""Web source `warc`: WARC files, the format ClueWeb and Common Crawl ship, read record by record.

`data.web.path` is one `.warc` / `.warc.gz` file or a folder of them (sorted). Only `response` records are
documents (requests, metadata and warcinfo are protocol, not pages). A response that is not HTML (images,
PDFs, redirects without a body) is counted as `not_html`: crawls are full of them, it is not damage.

Damage is normal in a crawl (a file copied while it was written, a bad disk block, a writer bug), and one
damaged record must not lose a file's good ones. FastWARC (and warcio) stop with an exception at the first
record they cannot frame, so the framing is done here, and FastWARC parses each well-framed record's HTTP
part (status line, headers, chunked and compressed bodies). Every problem is counted under its own reason
and the reader resynchronises on the next record, keeping every good record before and after it:

- `truncated`: the file (or its last gzip member) ends before the record's declared `Content-Length`;
- `bad_length`: the block is not followed by the blank line that ends a record, so `Content-Length` is
  wrong; the reader looks for the next `WARC/` version line after the record's header;
- `garbage`: bytes between records that do not start a record (each run of them counts once);
- `bad_warc_header`: a header block without a valid `Content-Length`, or too long to be a header;
- `bad_gzip`: a gzip member that does not decompress; the reader goes on at the next gzip member;
- `bad_http_header`: a response whose HTTP status line or headers cannot be parsed.

Under `on_bad_record: error` the first problem is a `RecordError` naming the file, the byte offset (for a
.gz file: of the gzip member, and of the record in the uncompressed stream) and what was wrong.
"""

from __future__ import annotations

import bisect
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fastwarc.warc import ArchiveIterator

from humpback.params import WebDataParams
from humpback.sources.counts import SourceError
from humpback.sources.documents import BadRecord, Document, bad_record, html_document

SUFFIXES = (".warc", ".warc.gz")
HTML_TYPES = {"text/html", "application/xhtml+xml"}
GZIP_MAGIC = b"\x1f\x8b\x08"
CHUNK = 1 << 16  # bytes read at a time: a page or two of a crawl, little memory
MAX_HEADER = 1 << 16  # a WARC header block longer than this is not one (real ones are far shorter)
VERSION = b"WARC/1."
END = b"\r\n\r\n"


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
    """The file's HTML responses as documents; every damaged record as a counted `BadRecord`."""
    with open(path, "rb") as f:
        for item in WarcRecords(f):
            if isinstance(item, Problem):
                yield bad_record(on_bad_record, item.reason, f"{path}: record at {item.where}: {item.message}")
                continue
            if item.type != b"response":
                continue
            where = f"{path}: record at {item.where}"
            record = next(iter(ArchiveIterator(io.BytesIO(item.raw), parse_http=True, auto_decode="all")))
            if record.http_headers is None or not record.http_headers.status_code:
                yield bad_record(
                    on_bad_record,
                    "bad_http_header",
                    f"{where}: the response's HTTP status line or headers cannot be parsed",
                )
                continue
            if (record.http_content_type or "").lower() not in HTML_TYPES:
                yield BadRecord(where, "not_html", bad=False)
                continue
            uri = record.headers.get("WARC-Target-URI") or f"{path.name}@{item.offset}"
            yield html_document(record.reader.read(), uri, "warc/", where, on_bad_record, record.http_charset)


@dataclass(frozen=True)
class Record:
    type: bytes  # WARC-Type, lower case
    raw: bytes  # the whole record: header, block and the blank line after it
    offset: int  # in the uncompressed stream
    where: str  # for messages: "byte N" (and the gzip member's offset)


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str
    where: str


class WarcRecords:
    """Frames the records of one WARC file (plain or gzip members), resynchronising after damage."""

    def __init__(self, f: BinaryIO):
        self.source = Decompressed(f) if f.read(3) == GZIP_MAGIC else Plain(f)
        f.seek(0)
        self.buf = bytearray()
        self.base = 0  # offset of buf[0] in the uncompressed stream
        self.run_over = False  # the current contiguous run of bytes has ended (end of file or a bad member)
        self.resyncing = False  # after a bad record: the bytes up to the next record are its, not garbage

    def _fill(self, n: int) -> bool:
        """At least n bytes in the buffer, unless the run ends first."""
        while len(self.buf) < n and not self.run_over:
            chunk = self.source.more()
            if chunk:
                self.buf += chunk
            else:
                self.run_over = True
        return len(self.buf) >= n

    def _advance(self, n: int) -> None:
        del self.buf[:n]
        self.base += n

    def _where(self, offset: int) -> str:
        return self.source.where(offset)

    def __iter__(self) -> Iterator[Record | Problem]:
        while True:
            while self._fill(1) and self.buf[:1] in (b"\r", b"\n"):  # blank lines between records are fine
                self._advance(1)
            if not self.buf:
                if self.source.broken is None:
                    return
                # A damaged gzip member ended the run: go on with the next one.
                yield Problem(
                    "bad_gzip",
                    f"gzip member does not decompress ({self.source.broken})",
                    f"byte {self.source.broken_at} (gzip member)",
                )
                self.source.broken, self.run_over, self.resyncing = None, False, False
                continue
            self._fill(len(VERSION))
            if not self.buf.startswith(VERSION):
                yield from self._skip_garbage()
                continue
            self.resyncing = False
            yield from self._record()

    def _cut(self, offset: int, message: str) -> Iterator[Problem]:
        """The run ended inside a record: the file is cut short, or a gzip member after it is damaged."""
        if self.source.broken is None:
            yield Problem("truncated", f"truncated WARC record ({message})", self._where(offset))
        self._advance(len(self.buf))

    def _record(self) -> Iterator[Record | Problem]:
        start = self.base
        end = self._find(END, 0, MAX_HEADER)
        if end < 0:
            if self.run_over and len(self.buf) < MAX_HEADER:
                yield from self._cut(start, "the header never ends")
                return
            yield Problem("bad_warc_header", f"no end of header within {MAX_HEADER} bytes", self._where(start))
            self._advance(len(VERSION))
            self.resyncing = True
            return
        fields = parse_fields(bytes(self.buf[:end]))
        length = fields.get(b"content-length", b"")
        if not length.isdigit():
            yield Problem(
                "bad_warc_header", f"invalid Content-Length {length.decode(errors='replace')!r}", self._where(start)
            )
            self._advance(end + len(END))
            self.resyncing = True
            return
        total = end + len(END) + int(length) + len(END)
        complete = self._fill(total)
        if not complete and self.buf.find(b"\n" + VERSION, end) < 0:
            present = max(0, len(self.buf) - end - len(END))
            yield from self._cut(start, f"Content-Length {int(length)}, {present} bytes present")
            return
        if not complete or self.buf[total - len(END) : total] != END:
            yield Problem(
                "bad_length",
                f"Content-Length {int(length)} is wrong: the block is not followed "
                "by the blank line that ends a record",
                self._where(start),
            )
            self._advance(end + len(END))  # the next record may begin inside the declared block
            self.resyncing = True
            return
        yield Record(fields.get(b"warc-type", b"").lower(), bytes(self.buf[:total]), start, self._where(start))
        self._advance(total)

    def _find(self, needle: bytes, begin: int, limit: int) -> int:
        """Index of `needle` in the buffer at or after `begin`, reading up to `limit` bytes; -1 if absent."""
        checked = begin
        while True:
            found = self.buf.find(needle, checked)
            if found >= 0:
                return found
            checked = max(begin, len(self.buf) - len(needle) + 1)
            if len(self.buf) >= limit or not self._fill(len(self.buf) + 1):
                return -1

    def _skip_garbage(self) -> Iterator[Problem]:
        start = self.base
        while True:
            found = self.buf.find(b"\n" + VERSION)
            if found >= 0:
                self._advance(found + 1)
                break
            keep = len(VERSION)  # a version line may straddle the next read
            if self.run_over:
                self._advance(len(self.buf))
                break
            self._advance(max(0, len(self.buf) - keep))
            self._fill(len(self.buf) + 1)
        if not self.resyncing:
            yield Problem("garbage", f"{self.base - start} bytes that are not a WARC record", self._where(start))


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([^\r]*)", re.IGNORECASE)
_WARC_TYPE = re.compile(rb"\r\nwarc-type:[ \t]*([^\r]*)", re.IGNORECASE)


def parse_fields(header: bytes) -> dict[bytes, bytes]:
    """The two WARC named fields the framing needs (lower-cased names), from a header block."""
    fields = {}
    for name, pattern in ((b"content-length", _CONTENT_LENGTH), (b"warc-type", _WARC_TYPE)):
        if match := pattern.search(header):
            fields[name] = match.group(1).strip()
    return fields


class Plain:
    """An uncompressed WARC file: offsets are file offsets."""

    broken: str | None = None
    broken_at = 0

    def __init__(self, f: BinaryIO):
        self.f = f

    def more(self) -> bytes:
        return self.f.read(CHUNK)

    def where(self, offset: int) -> str:
        return f"byte {offset}"


class Decompressed:
    """A .warc.gz file, member by member, so that a damaged member loses only itself.

    `where` names the gzip member (the offset Common Crawl's indexes give) and the uncompressed offset.
    """

    FEED = 1 << 16  # compressed bytes given to zlib at a time: it copies what is left after a member ends

    def __init__(self, f: BinaryIO):
        self.f = f
        self.chunk = memoryview(b"")  # compressed bytes read from the file
        self.pos = 0  # next byte of `chunk` to decompress
        self.chunk_start = 0  # compressed offset of chunk[0]
        self.member: zlib._Decompress | None = None
        self.out_pos = 0
        # Member starts: uncompressed offsets (sorted) and their compressed offsets, the last few only.
        self.starts_out: list[int] = []
        self.starts_raw: list[int] = []
        self.broken: str | None = None  # why the last run ended, when a member was damaged
        self.broken_at = 0  # the damaged member's compressed offset

    def more(self) -> bytes:
        """The next decompressed bytes; b"" at the end of the file or of a run cut by a damaged member."""
        while True:
            if self.pos >= len(self.chunk):
                self.chunk_start += len(self.chunk)
                self.chunk, self.pos = memoryview(self.f.read(CHUNK)), 0
                if not self.chunk:
                    return b""  # an unfinished member here is a truncated file: the reader sees a cut record
            if self.member is None:
                self.member = zlib.decompressobj(31)
                if len(self.starts_out) > 64:
                    del self.starts_out[:32], self.starts_raw[:32]
                self.starts_out.append(self.out_pos)
                self.starts_raw.append(self.chunk_start + self.pos)
            feed = self.chunk[self.pos : self.pos + self.FEED]
            try:
                out = self.member.decompress(feed)
            except zlib.error as exc:
                self.broken, self.broken_at = str(exc), self.starts_raw[-1]
                self._resync(self.starts_raw[-1] + 1)
                return b""
            if self.member.eof:
                self.pos += len(feed) - len(self.member.unused_data)
                self.member = None
            else:
                self.pos += len(feed)
            self.out_pos += len(out)
            if out:
                return out

    def _resync(self, begin: int) -> None:
        """Continue at the next gzip member header after `begin`, or at the end of the file."""
        self.f.seek(begin)
        pos, tail = begin, b""
        while chunk := self.f.read(CHUNK):
            data = tail + chunk
            found = data.find(GZIP_MAGIC)
            if found >= 0:
                pos = pos - len(tail) + found
                break
            tail = data[-(len(GZIP_MAGIC) - 1) :]
            pos += len(chunk)
        self.f.seek(pos)
        self.chunk, self.pos, self.chunk_start, self.member = memoryview(b""), 0, pos, None

    def where(self, offset: int) -> str:
        k = bisect.bisect_right(self.starts_out, offset) - 1
        member = self.starts_raw[k] if k >= 0 else 0
        return f"byte {member} (gzip member; byte {offset} uncompressed)"
