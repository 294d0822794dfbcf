"""The paper's text filters beyond headers and length: repetition, language, near-duplicates."""

from __future__ import annotations

from humpback.dedup import Deduplicator
from humpback.filters import SegmentFilter, detect_language, repetition
from humpback.params import WebDataParams
from humpback.segment import Segment

ENGLISH = (
    "The library keeps its books on open shelves, so readers can browse by subject. Each shelf carries a "
    "label with the range of call numbers it holds, and a map near the entrance shows where each subject is."
)
GERMAN = (
    "Die Bibliothek stellt ihre Bücher in offenen Regalen auf, damit die Leser nach Themen stöbern können. "
    "Jedes Regal trägt ein Schild mit den Signaturen, und ein Plan am Eingang zeigt, wo jedes Fach steht."
)
PARAMS = WebDataParams(source="jsonl", path="", text_field="text", min_chars=10, max_chars=5000,
                       max_repetition=0.3, language="en", near_duplicate=0.8, shard_size=1, limit=0,
                       on_bad_record="error", max_bad_fraction=0.01)


def test_repetition_share_of_repeated_word_5grams():
    assert repetition(ENGLISH) == 0.0
    spam = "Click here to win a free prize today. " * 5
    assert repetition(spam) > 0.7
    assert 0.0 < repetition(ENGLISH + " " + ENGLISH) <= 0.5


def test_language_of_the_prose_not_the_code():
    assert detect_language(ENGLISH) == "en" and detect_language(GERMAN) == "de"
    assert detect_language(ENGLISH + "\n\n```\nx = {'a': 1}\nfor k in x: print(k)\n```") == "en"
    assert detect_language("```\nimport os\n```\n\nSee os.") is None  # too little prose to tell


def test_segment_filter_reasons_in_order():
    keep = SegmentFilter(PARAMS)
    assert keep.reason(Segment("1", "d", "Topic", ENGLISH)) is None
    assert keep.reason(Segment("2", "d", "Thema", GERMAN)) == "language"
    assert keep.reason(Segment("3", "d", None, "Buy now. " * 40)) == "repetitive"
    assert keep.reason(Segment("4", "d", "ADVERTISEMENT", "Buy now. " * 40)) == "allcaps_header"
    assert keep.reason(Segment("5", "d", "Short", "Tiny.")) == "too_short"
    keep.reason(Segment("6", "d", None, "``` code only ```"))
    assert keep.undetermined == 1


def test_near_duplicates_are_caught_and_different_texts_are_not():
    dedup = Deduplicator(0.8)
    long_text = " ".join([ENGLISH, ENGLISH.replace("library", "archive"), ENGLISH.upper(), GERMAN])
    assert dedup.check(long_text) is None
    assert dedup.check(long_text) == "duplicate"
    assert dedup.check(long_text.replace("entrance", "front door", 1)) == "near_duplicate"
    assert dedup.check(GERMAN + " " + ENGLISH.replace("books", "maps")) is None
    exact_only = Deduplicator(0.0)
    assert exact_only.check(long_text) is None
    assert exact_only.check(long_text.replace("entrance", "front door", 1)) is None
