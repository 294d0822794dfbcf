"""What a web reader yields: whole documents to segment, or a record it could not use.

Readers only read; segmentation, filters and counting happen downstream, shard by shard (see
`humpback.sources.web`). A record a reader cannot use is not dropped on the spot: it is yielded as a
`BadRecord` so that the shard that contains it counts it (`read` and `dropped[reason]`), which keeps the
counts of a resumed run identical to an uninterrupted one.

Decoding follows the HTML standard's order for finding a page's encoding: a byte-order mark, then the
transport's charset (the HTTP `Content-Type` of a WARC response), then a `<meta charset>` or
`<meta http-equiv="Content-Type">` in the first 1,024 bytes, then detection. Labels are resolved by the
WHATWG Encoding standard's label table, as browsers resolve them (`webencodings`: `iso-8859-1`, `latin1` and
`ascii` mean windows-1252; a label it does not list, such as `cp437` or `rot13`, is no declaration). Junk
bytes inside a text page do not lose the page: the segments they land in are cleaned or dropped in
`humpback.sources.filters`; only a document that is mostly junk (an image or a PDF behind a text/html type) is
dropped here, as `binary`.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from typing import Literal

import webencodings
from charset_normalizer import from_bytes

from humpback.sources.filters import JUNK, has_junk
from humpback.storage.records import RecordError

# Share of a decoded document that may be undecodable or control characters before it is taken for binary
# data rather than text with junk in places: random bytes decoded either way land well above it, a text page
# with a junk paragraph far below (docs/web-input.md "Figures behind the code's comments").
MAX_BINARY_SHARE = 0.3
# How far the HTML standard's prescan looks for a <meta> charset.
PRESCAN_BYTES = 1024
_META_CHARSET = re.compile(rb"""<meta\s[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_:.+-]+)""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# The HTML standard's prescan: a <meta> that claims UTF-16 cannot be right for bytes that were readable as
# ASCII to find it; it means UTF-8.
_META_UTF16 = {"utf-16le", "utf-16be"}
# What detection may answer: the single- and multi-byte encodings of the HTML standard (browsers decode
# nothing else; UTF-16 only with a BOM). Also much faster than letting charset-normalizer try every codec
# (docs/web-input.md "Figures behind the code's comments").
WHATWG_ENCODINGS = [
    "utf_8",
    "cp1252",
    "iso8859_2",
    "iso8859_3",
    "iso8859_4",
    "iso8859_5",
    "iso8859_6",
    "iso8859_7",
    "iso8859_8",
    "iso8859_10",
    "iso8859_13",
    "iso8859_14",
    "iso8859_15",
    "iso8859_16",
    "koi8_r",
    "koi8_u",
    "mac_roman",
    "mac_cyrillic",
    "cp866",
    "cp874",
    "cp1250",
    "cp1251",
    "cp1253",
    "cp1254",
    "cp1255",
    "cp1256",
    "cp1257",
    "cp1258",
    "gb18030",
    "gbk",
    "big5",
    "euc_jp",
    "iso2022_jp",
    "shift_jis",
    "euc_kr",
]


@dataclass(frozen=True)
class Document:
    doc: str  # the page: a relative path, a WARC target URI, `<file>:<row>`
    id_prefix: str  # segment ids are `<id_prefix><doc>#<n>`
    markup: Literal["html", "text"]  # html: header-anchored segments; text: paragraph blocks
    content: str
    replaced: bool = False  # decoded with U+FFFD for bytes invalid in its encoding (noted in the counts' info)


@dataclass(frozen=True)
class BadRecord:
    where: str  # file and line/row/offset, for the record of what was skipped
    reason: str  # the `dropped` key it is counted under
    n: int = 1  # records it stands for (a Parquet file without the text column: all its rows)
    bad: bool = True  # False: expected in a crawl (an image, a PDF), not counted against max_bad_fraction


def bad_record(on_bad_record: str, reason: str, message: str, n: int = 1) -> BadRecord:
    """Raise `RecordError(message)` under `on_bad_record: error`; else the `BadRecord` to count."""
    if on_bad_record == "error":
        raise RecordError(message)
    return BadRecord(message.split(": ", 1)[0], reason, n)


def resolve_label(label: str | bytes | None, from_meta: bool = False) -> str | None:
    """An encoding label → a Python codec name as a browser resolves it, or None when unknown."""
    if not label:
        return None
    name = (label.decode("ascii", "ignore") if isinstance(label, bytes) else label).strip().strip("\"'")
    encoding = webencodings.lookup(name)  # case and surrounding whitespace ignored, as the standard says
    if encoding is None:
        return None
    if from_meta and encoding.name in _META_UTF16:
        return "utf-8"
    # x-user-defined has no Python codec; the prescan reads it as windows-1252, and so do we from a transport.
    return "cp1252" if encoding.name == "x-user-defined" else encoding.codec_info.name


def meta_charset(data: bytes) -> str | None:
    """The charset a `<meta>` declares in the first bytes of the page (the HTML standard's prescan)."""
    match = _META_CHARSET.search(data, 0, PRESCAN_BYTES)
    return resolve_label(match.group(1), from_meta=True) if match else None


def detect_encoding(data: bytes) -> str | None:
    """Encoding of undeclared bytes: valid UTF-8 is UTF-8 (any detector agrees, without its cost), else
    charset-normalizer's guess. Among its guesses that read the bytes equally well, windows-1252 wins: it is
    the HTML standard's fallback, and Latin-1 text is equally "clean" in cp1250 while meaning other letters."""
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    matches = from_bytes(data, cp_isolation=WHATWG_ENCODINGS)
    best = matches.best()
    if best is None:
        return None
    for match in matches:
        if match.encoding == "cp1252" and match.chaos <= best.chaos and match.coherence >= best.coherence:
            return "cp1252"
    return best.encoding


def decode_markup(data: bytes, charset: str | None = None, markup: bool = True) -> tuple[str, bool, float]:
    """Bytes → (text, whether invalid bytes were replaced, share of junk characters).

    `charset`: the transport's label (an HTTP header), if any. `markup`: look for a `<meta>` declaration.
    The first encoding found in the standard's order decodes the page; invalid bytes in it become U+FFFD
    (counted by the caller) rather than losing the page. The junk share lets the caller tell binary data
    from text.
    """
    encoding, body = None, data
    for bom, name in _BOMS:
        if data.startswith(bom):
            encoding, body = name, data[len(bom) :]
            break
    encoding = (
        encoding
        or resolve_label(charset)
        or (meta_charset(data) if markup else None)
        or detect_encoding(data)
        or "utf-8"
    )
    try:
        text, replaced = body.decode(encoding), False
    except UnicodeDecodeError:
        text, replaced = body.decode(encoding, errors="replace"), True
    junk = len(JUNK.findall(text)) / max(len(text), 1) if has_junk(text) else 0.0
    return text, replaced, junk


def html_document(
    data: bytes, doc: str, id_prefix: str, where: str, on_bad_record: str, charset: str | None = None
) -> Document | BadRecord:
    """A page's bytes → a `Document`, or binary data → `RecordError` / a `BadRecord` counted as `binary`."""
    text, replaced, junk = decode_markup(data, charset)
    if junk > MAX_BINARY_SHARE:
        return bad_record(
            on_bad_record,
            "binary",
            f"{where}: not HTML text ({junk:.0%} undecodable or control characters; a page with junk in "
            f"places is kept, one over {MAX_BINARY_SHARE:.0%} is taken for binary data)",
        )
    return Document(doc, id_prefix, "html", text, replaced)
