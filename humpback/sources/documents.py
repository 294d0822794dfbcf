"""What a web reader yields: whole documents to segment, or a record it could not use.

Readers only read; segmentation, filters and counting happen downstream, shard by shard (see
`humpback.sources.web`). A record a reader cannot use is not dropped on the spot: it is yielded as a
`BadRecord` so that the shard that contains it counts it (`read` and `dropped[reason]`), which keeps the
counts of a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from humpback.records import RecordError

# Share of bytes that may be undecodable or control characters before a "page" is taken for binary junk
# (an image or a PDF behind a .html name, a corrupt record) rather than text with a few odd bytes.
MAX_JUNK_SHARE = 0.05
_JUNK = re.compile(r"[\ufffd\x00-\x08\x0b\x0e-\x1f]")


@dataclass(frozen=True)
class Document:
    doc: str  # the page: a relative path, a WARC target URI, `<file>:<row>`
    id_prefix: str  # segment ids are `<id_prefix><doc>#<n>`
    markup: Literal["html", "text"]  # html: header-anchored segments; text: paragraph blocks
    content: str
    replaced: bool = False  # decoded with U+FFFD for a few bad bytes (noted in the counts' info)


@dataclass(frozen=True)
class BadRecord:
    where: str  # file and line/row/offset, for the record of what was skipped
    reason: str  # the `dropped` key it is counted under
    n: int = 1  # records it stands for (a Parquet file without the text column: all its rows)


def bad_record(on_bad_record: str, reason: str, message: str, n: int = 1) -> BadRecord:
    """Raise `RecordError(message)` under `on_bad_record: error`; else the `BadRecord` to count."""
    if on_bad_record == "error":
        raise RecordError(message)
    return BadRecord(message.split(": ", 1)[0], reason, n)


def decode_markup(data: bytes, charset: str | None = None) -> tuple[str, bool, float]:
    """Bytes → (text, whether bad bytes were replaced, share of junk characters).

    The declared charset first (an HTTP header), then UTF-8; undecodable bytes become U+FFFD so one odd
    byte does not lose a page. The junk share (U+FFFD and control characters other than whitespace) lets
    the caller tell binary data from text.
    """
    text, replaced = None, False
    for encoding in filter(None, (charset, "utf-8")):
        try:
            text = data.decode(encoding)
            break
        except (UnicodeDecodeError, LookupError):
            continue
    if text is None:
        text, replaced = data.decode("utf-8", errors="replace"), True
    return text, replaced, len(_JUNK.findall(text)) / max(len(text), 1)


def html_document(
    data: bytes, doc: str, id_prefix: str, where: str, on_bad_record: str, charset: str | None = None
) -> Document | BadRecord:
    """A page's bytes → a `Document`, or binary junk → `RecordError` / a `BadRecord` counted as `binary`."""
    text, replaced, junk = decode_markup(data, charset)
    if junk > MAX_JUNK_SHARE:
        return bad_record(
            on_bad_record, "binary",
            f"{where}: not HTML text ({junk:.0%} undecodable or control characters; expected at most "
            f"{MAX_JUNK_SHARE:.0%})",
        )
    return Document(doc, id_prefix, "html", text, replaced)
