"""Unlabelled text → segments (the paper's filters are in `humpback.sources.filters` and `humpback.sources.dedup`).

Li et al. (2023) take "the text that follows an HTML header" as a segment: here the text after an h1–h4
heading up to the next h1–h4 heading (h5/h6 are too minor to start a unit and stay inside as text).
Page chrome (scripts, styles, nav, Sphinx's related bars, sidebar and footer, "¶" permalinks) is never
text. Text before a page's first heading becomes a segment with an empty header, so the empty-header
filter accounts for it instead of it vanishing silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

# fmt: off
HEADINGS = {"h1", "h2", "h3", "h4"}
_SKIP_TAGS = {"head", "script", "style", "nav", "form", "noscript", "template", "svg", "button"}
_SKIP_CLASSES = {"related", "sphinxsidebar", "footer", "headerlink", "mobile-nav", "clearer"}
_SKIP_IDS = {"sidebarbutton"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_PARAGRAPH_TAGS = {"p", "div", "section", "article", "table", "ul", "ol", "dl", "blockquote", "figure",
                   "h5", "h6", "hr", "main", "aside", "header"}
_LINE_TAGS = {"li", "dt", "dd", "tr", "br", "caption"}
_CELL_TAGS = {"td", "th"}
# fmt: on


@dataclass(frozen=True)
class Segment:
    id: str
    doc: str
    header: str | None  # None: the source has no headers (plain text), so header filters do not apply
    text: str

    def record(self) -> dict[str, str]:
        return {"id": self.id, "text": self.text, "header": self.header or "", "doc": self.doc}


# --------------------------------------------------------------------------------------------- HTML


def html_segments(html: str, doc: str, id_prefix: str) -> list[Segment]:
    """Header-anchored segments of one page; ids are `<id_prefix><doc>#<n>` in page order."""
    parser = _SegmentParser()
    parser.feed(html)
    parser.close()
    parser.flush_segment()
    return [Segment(f"{id_prefix}{doc}#{n}", doc, header, text) for n, (header, text) in enumerate(parser.segments)]


class _SegmentParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.segments: list[tuple[str, str]] = []
        self._stack: list[tuple[str, bool]] = []  # open elements: (tag, starts a skipped region)
        self._skip = 0  # depth of skipped regions we are inside
        self._header: str | None = None  # current segment's header (None before the first heading)
        self._header_parts: list[str] | None = None  # collecting a heading's text
        self._blocks: list[str] = []  # finished paragraphs and code fences of the current segment
        self._lines: list[str] = []  # finished lines of the current paragraph
        self._words: list[str] = []  # inline text of the current line
        self._pre: list[str] | None = None  # collecting a <pre>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            if tag in ("br", "hr") and not self._skip:
                self._break(paragraph=tag == "hr")
            return
        attr = dict(attrs)
        skip = (
            tag in _SKIP_TAGS
            or bool(_SKIP_CLASSES & set((attr.get("class") or "").split()))
            or attr.get("id") in _SKIP_IDS
            or attr.get("role") == "navigation"
        )
        self._stack.append((tag, skip))
        self._skip += skip
        if self._skip:
            return
        if tag in HEADINGS:
            self.flush_segment()
            self._header_parts = []
        elif tag == "pre":
            self._break(paragraph=True)
            self._pre = []
        elif tag in _PARAGRAPH_TAGS or tag in _LINE_TAGS:
            self._break(paragraph=tag in _PARAGRAPH_TAGS)
        elif tag in _CELL_TAGS:
            self._words.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID or not any(t == tag for t, _ in self._stack):
            return  # stray end tag: ignore rather than unbalance the stack
        while self._stack:
            open_tag, skip = self._stack.pop()
            was_skipping = self._skip > 0
            self._skip -= skip
            if not was_skipping:
                self._close(open_tag)
            if open_tag == tag:
                break

    def _close(self, tag: str) -> None:
        if tag in HEADINGS and self._header_parts is not None:
            # "¶" permalinks are skipped by class; strip a bare one too (other themes, old Sphinx).
            self._header = " ".join("".join(self._header_parts).split()).rstrip("¶ ")
            self._header_parts = None
        elif tag == "pre" and self._pre is not None:
            code = "\n".join(line.rstrip() for line in "".join(self._pre).split("\n")).strip("\n")
            if code.strip():
                self._blocks.append(f"```\n{code}\n```")
            self._pre = None
        elif tag in _PARAGRAPH_TAGS or tag in _LINE_TAGS:
            self._break(paragraph=tag in _PARAGRAPH_TAGS)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._header_parts is not None:
            self._header_parts.append(data)
        elif self._pre is not None:
            self._pre.append(data)  # whitespace inside <pre> is meaning (code layout)
        else:
            self._words.append(data)

    def _break(self, paragraph: bool) -> None:
        line = " ".join("".join(self._words).split())
        self._words = []
        if line:
            self._lines.append(line)
        if paragraph and self._lines:
            self._blocks.append("\n".join(self._lines))
            self._lines = []

    def flush_segment(self) -> None:
        self._break(paragraph=True)
        text = "\n\n".join(self._blocks)
        if self._header is not None or text:
            self.segments.append((self._header or "", text))
        self._blocks = []
        self._header = None


# --------------------------------------------------------------------------------------------- text


def text_segments(text: str, doc: str, id_prefix: str, max_chars: int) -> list[Segment]:
    """Segments of a headerless document: consecutive paragraphs packed up to `max_chars`.

    Plain text (e.g. a FineWeb row) has no headers to anchor on; blocks of whole paragraphs keep segment
    sizes in the paper's range without cutting sentences. A single paragraph over `max_chars` stays
    whole and is then dropped as too_long, like an overlong HTML section.
    """
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    blocks: list[str] = []
    for para in paragraphs:
        if blocks and len(blocks[-1]) + 2 + len(para) <= max_chars:
            blocks[-1] += "\n\n" + para
        else:
            blocks.append(para)
    return [Segment(f"{id_prefix}{doc}#{n}", doc, None, block) for n, block in enumerate(blocks)]
