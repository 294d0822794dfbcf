"""Web source `python-docs`: the HTML pages of Debian's python3.11-doc, cut into header-anchored segments.

Real pages with real h1–h4 headers, so the paper's segmentation runs unchanged. Excluded: the FAQ
(`faq/`, it is the seed data; a held-out seed pair must never reappear as web text), `contents.html` (the
global table of contents, which lists every FAQ question), the generated index pages (`genindex*.html`,
`py-modindex.html`, `search.html`), and Sphinx's asset folders (`_static/`, `_sources/`, `_images/`...).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from humpback.params import WebDataParams
from humpback.sources.counts import SourceError
from humpback.sources.documents import BadRecord, Document, html_document
from humpback.sources.python_faq import DEFAULT_ROOT

EXCLUDED_DIRS = {"faq"}
EXCLUDED_PAGES = {"contents.html", "py-modindex.html", "search.html"}
EXCLUDED_PREFIXES = ("genindex",)


def is_excluded(rel: Path) -> bool:
    top = rel.parts[0]
    return (len(rel.parts) > 1 and (top in EXCLUDED_DIRS or top.startswith("_"))) or (
        len(rel.parts) == 1 and (rel.name in EXCLUDED_PAGES or rel.name.startswith(EXCLUDED_PREFIXES))
    )


def doc_pages(root: str | Path) -> list[Path]:
    """Relative paths of the pages to segment, sorted (the order fixes segment ids and the sample)."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(
            f"python-docs: {root} not found; install Debian's python3.11-doc "
            "(apt-get install python3.11-doc) or set data.web.path to a folder of HTML pages"
        )
    pages = (p.relative_to(root) for p in root.rglob("*.html") if p.is_file())
    return sorted(rel for rel in pages if not is_excluded(rel))


def read_web(params: WebDataParams) -> Iterator[Document | BadRecord]:
    root = Path(params.path or DEFAULT_ROOT)
    for rel in doc_pages(root):
        yield html_document(
            (root / rel).read_bytes(), rel.as_posix(), "python-docs/", str(root / rel), params.on_bad_record
        )
