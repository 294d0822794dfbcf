"""HTML → header-anchored segments, the paper's filters, and paragraph blocks for headerless text."""

from __future__ import annotations

from pathlib import Path

import pytest

from humpback.sources.dedup import Deduplicator
from humpback.sources.filters import SegmentFilter, header_problem
from humpback.sources.segment import Segment, html_segments, text_segments
from tests.conftest import web_data_params

PAGE = Path(__file__).parents[1] / "fixtures" / "pydocs" / "library" / "sample.html"


@pytest.fixture(scope="module")
def segments() -> list[Segment]:
    return html_segments(PAGE.read_text(encoding="utf-8"), "library/sample.html", "python-docs/")


def filter_segments(segments, min_chars: int, max_chars: int, dropped: dict[str, int]):
    """The per-segment filters then exact dedup, as prepare_web applies them (other filters off)."""
    params = web_data_params(min_chars=min_chars, max_chars=max_chars, max_bad_fraction=0.01)
    keep, dedup = SegmentFilter(params), Deduplicator(0.0)
    for segment in segments:
        if reason := keep.reason(segment) or dedup.check(segment.text):
            dropped[reason] = dropped.get(reason, 0) + 1
        else:
            yield segment


def by_header(segments: list[Segment]) -> dict[str, str]:
    return {s.header: s.text for s in segments}


def test_every_h1_to_h4_starts_a_segment_with_its_header(segments):
    headers = [s.header for s in segments]
    assert headers == [
        "",
        "sample — A sample module",
        "Usage",
        "LATEST NEWS",
        "Free Newsletter",
        "",
        "Tiny",
        "First copy",
        "Second copy",
        "Details",
    ]
    assert [s.id for s in segments][:2] == [
        "python-docs/library/sample.html#0",
        "python-docs/library/sample.html#1",
    ]
    assert all(s.doc == "library/sample.html" for s in segments)
    # The text before the first heading is a segment with an empty header (dropped by the filter, counted).
    assert segments[0].text == "Orphan text before any heading."


def test_h5_stays_inside_and_pre_keeps_its_lines(segments):
    usage = by_header(segments)["Usage"]
    assert "```\ndef main():\n    return 42\n```" in usage
    assert "A minor heading\n\nMinor headings stay inside the segment." in usage


def test_page_chrome_is_not_text(segments):
    everything = " ".join(s.header + " " + s.text for s in segments)
    for hidden in (
        "HIDDEN",
        "do not keep",
        "color: black",
        "Table of Contents",
        "Navigation",
        "previous",
        "Previous topic",
        "¶",
        "sample — A sample page",
    ):
        assert hidden not in everything


def test_lists_and_cells_stay_readable(segments):
    assert by_header(segments)["Details"] == "First item of a list\nSecond item of a list\n\ncell one cell two"


def test_filters_count_one_reason_per_segment(segments):
    dropped: dict[str, int] = {}
    kept = list(filter_segments(segments, min_chars=40, max_chars=90, dropped=dropped))
    assert [s.header for s in kept] == ["sample — A sample module", "First copy", "Details"]
    assert dropped == {
        "empty_header": 2,
        "allcaps_header": 1,
        "navigation_header": 1,
        "too_short": 1,
        "too_long": 1,
        "duplicate": 1,
    }
    assert len(kept) + sum(dropped.values()) == len(segments)


@pytest.mark.parametrize(
    "header, reason",
    [
        ("", "empty_header"),
        ("   ", "empty_header"),
        ("LATEST NEWS", "allcaps_header"),
        ("ADVERTISEMENT", "allcaps_header"),
        ("API", None),  # a short all-caps header is an acronym
        ("TLS 1.3", None),
        ("Advertisement", "navigation_header"),
        ("Community Forum", "navigation_header"),
        ("Quick Links", "navigation_header"),
        ("Get our FREE newsletter!", "navigation_header"),
        ("Table of Contents", "navigation_header"),
        ("Previous topic", "navigation_header"),
        ("This Page", "navigation_header"),
        ("Search", "navigation_header"),
        ("Reading file contents", None),  # "contents" only counts as the whole header
        ("http.cookies — HTTP state management", None),
        ("Usage", None),
    ],
)
def test_header_problem(header, reason):
    assert header_problem(header) == reason


def test_malformed_html_does_not_break_segmentation():
    html = "<h2>Broken</h2><p>Unclosed <b>bold</p></div></span><p>Next <br> line</p><h3>After</h3>tail"
    segments = html_segments(html, "x.html", "t/")
    assert [(s.header, s.text) for s in segments] == [
        ("Broken", "Unclosed bold\n\nNext\nline"),
        ("After", "tail"),
    ]


def test_text_segments_pack_whole_paragraphs():
    paragraphs = ["a" * 40, "b" * 40, "c" * 40, "d" * 200]
    segments = text_segments("\n\n".join(paragraphs), "doc.jsonl:3", "jsonl/", max_chars=100)
    assert [s.text for s in segments] == ["a" * 40 + "\n\n" + "b" * 40, "c" * 40, "d" * 200]
    assert [s.id for s in segments] == ["jsonl/doc.jsonl:3#0", "jsonl/doc.jsonl:3#1", "jsonl/doc.jsonl:3#2"]
    assert all(s.header is None for s in segments)
    # Headerless segments skip the header filters; the long paragraph stays whole and is dropped as too long.
    dropped: dict[str, int] = {}
    kept = list(filter_segments(segments, 10, 100, dropped))
    assert len(kept) == 2 and dropped == {"too_long": 1}
    assert kept[0].record()["header"] == ""
