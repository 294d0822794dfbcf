"""Web source `html`: a folder of HTML pages (any crawl or export saved as files), or one page.

Pages are read in sorted path order (the order fixes segment ids, shards and the sample) and cut into
header-anchored segments like the default docs. A page of binary junk is a `RecordError` naming the file,
or under `on_bad_record: skip` a counted `binary` drop; broken markup is not an error (browsers render it,
and the segmenter ignores stray tags).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from humpback.params import WebDataParams
from humpback.sources.counts import SourceError
from humpback.sources.documents import BadRecord, Document, html_document

SUFFIXES = (".html", ".htm", ".xhtml")


def html_pages(path: str | Path) -> tuple[Path, list[Path]]:
    """(root, sorted relative paths of the pages under it)."""
    path = Path(path)
    if path.is_file():
        return path.parent, [Path(path.name)]
    if not path.is_dir():
        raise SourceError(f"data.web.path: no such file or folder: {path} (source 'html' needs HTML pages)")
    pages = sorted(p.relative_to(path) for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if not pages:
        raise SourceError(f"data.web.path: no {'/'.join(SUFFIXES)} files under {path}")
    return path, pages


def read_web(params: WebDataParams) -> Iterator[Document | BadRecord]:
    if not params.path:
        raise SourceError("data.web.path must name a folder of HTML pages for source 'html'")
    root, pages = html_pages(params.path)
    for rel in pages:
        yield html_document((root / rel).read_bytes(), rel.as_posix(), "html/", str(root / rel), params.on_bad_record)
