"""The paper's per-segment filters: boilerplate headers, length, repetitive text, language; and web cleaning.

Li et al. (2023) keep English ClueWeb segments of 600–3,000 characters, drop empty, all-caps and navigation
headers ("advertisement", "forum", "quick link", "free newsletter") and repetitive sentences (n-gram
overlap). Each dropped segment is counted under the first reason that applies, checked in this order
(cheapest first): empty_header, allcaps_header, navigation_header (only where the source has headers),
too_short, too_long, repetitive, language. Duplicates across the corpus are `humpback.sources.dedup`'s job.

Before them, `SegmentFilter.clean` makes web text safe to keep (web input is not the paper's clean ClueWeb
extract): junk bytes (undecodable characters, NULs and other controls, left by a damaged page) are removed
with the words they sit in, and a segment that is mostly junk is dropped as `junk`; then rater-directed
text (`humpback.sources.rater_text`) is removed, so the lengths the filters check are those of what is kept.
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache

from humpback.params import WebDataParams
from humpback.sources.rater_text import remove_rater_text
from humpback.sources.segment import Segment

# fmt: off
# Headers of boilerplate rather than content: whole-header matches for generic words, phrase matches for
# the paper's examples ("advertisement", "forum", "quick link", "free newsletter") and their kin.
NAVIGATION_HEADERS = {
    "contents", "table of contents", "search", "quick search", "navigation", "related", "related topics",
    "previous topic", "next topic", "this page", "index", "menu", "site map", "sitemap", "footer",
    "share", "comments", "tags", "categories", "archives", "links", "copyright",
}
# fmt: on
NAVIGATION_PHRASES = re.compile(
    r"\b(advertisements?|forums?|quick links?|free newsletters?|newsletters?|subscribe|sign up|log ?in|"
    r"cookie (policy|settings|consent)|privacy policy|terms of (use|service)|all rights reserved)\b"
)
# A short all-caps header ("API", "IDLE", "TLS 1.3") is an acronym; a longer one ("LATEST NEWS") shouts.
MIN_CAPS_LETTERS = 6
# Repetition is measured on word 5-grams, as Gopher's (Rae et al., 2021) duplicate n-gram fractions:
# short enough to catch a repeated sentence, long enough that common phrases ("one of the") do not count.
REPETITION_NGRAM = 5
# Language: the prose is what has a language (code blocks read as noise to a detector), and the first
# characters of it decide as well as all of it, at a fraction of the cost.
_CODE_FENCE = re.compile(r"```.*?(```|$)", re.DOTALL)
_LETTER = re.compile(r"[^\W\d_]")
LANGUAGE_SAMPLE_CHARS = 300
MIN_LANGUAGE_LETTERS = 40  # below this a detector guesses; such a segment is kept and noted
# Undecodable (U+FFFD), C0 controls other than tab/newline/form feed/carriage return, DEL and C1 controls.
JUNK = re.compile(r"[\ufffd\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
# The same characters as UTF-8: the C0 controls and DEL are single bytes (deleted by bytes.translate, a C
# loop, faster than `re` on a character class), U+FFFD and the C1 controls (U+0080-U+009F) have lead bytes
# EF BF and C2 (looked for as substrings, the regex only when one is there).
_JUNK_BYTES = bytes([*range(0x09), 0x0B, *range(0x0E, 0x20), 0x7F])
_C1_OR_REPLACEMENT = re.compile(rb"\xc2[\x80-\x9f]|\xef\xbf\xbd")
# Junk: a word with an undecodable or control character in it is noise, whole (random bytes decode to long
# "words" of symbols and letters around those characters). A segment whose characters are mostly in such
# words is dropped; below that, they are cut out and the rest kept.
_JUNK_WORD = re.compile(r"[^\s\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufffd]*" + JUNK.pattern + r"\S*")
_SPACES = re.compile(r"[ \t]{2,}")
MAX_JUNK_SHARE = 0.5


def has_junk(text: str) -> bool:
    """`JUNK.search(text) is not None`, fast: every segment and page goes through it, nearly all without junk
    (docs/web-input.md "Re-measured after the junk checks' fast path")."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data.translate(None, _JUNK_BYTES)) != len(data):
        return True
    return not text.isascii() and (b"\xc2" in data or b"\xef\xbf" in data) and bool(_C1_OR_REPLACEMENT.search(data))


def junk_share(text: str) -> float:
    """Share of the text's characters in words that contain junk (see MAX_JUNK_SHARE)."""
    return sum(len(m) for m in _JUNK_WORD.findall(text)) / max(len(text), 1)


def strip_junk(text: str) -> str:
    """The text without its junk words; lines without junk are kept as they are (code keeps its indent),
    a line or paragraph left empty disappears."""
    lines = []
    for line in text.split("\n"):
        if has_junk(line):
            indent = line[: len(line) - len(line.lstrip(" \t"))]
            line = _SPACES.sub(" ", JUNK.sub("", _JUNK_WORD.sub("", line))).strip()
            if not line:
                continue
            line = indent + line
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def header_problem(header: str) -> str | None:
    """Why a header marks boilerplate rather than content, or None."""
    if not header.strip():
        return "empty_header"
    letters = [c for c in header if c.isalpha()]
    if len(letters) >= MIN_CAPS_LETTERS and all(c.isupper() for c in letters):
        return "allcaps_header"
    norm = " ".join(re.sub(r"[^\w\s]", " ", header.lower()).split())
    if norm in NAVIGATION_HEADERS or NAVIGATION_PHRASES.search(norm):
        return "navigation_header"
    return None


def repetition(text: str, n: int = REPETITION_NGRAM) -> float:
    """Share of the text's characters (in words) inside a word n-gram that already occurred earlier."""
    words = text.split()
    grams = list(zip(*(words[i:] for i in range(n))))
    if len(set(grams)) == len(grams):  # the common case, decided without a Python-level loop
        return 0.0
    first: dict[tuple[str, ...], int] = {}
    repeated = bytearray(len(words))
    for i, gram in enumerate(grams):
        if first.setdefault(gram, i) != i:
            repeated[i : i + n] = b"\x01" * n
    return sum(len(w) for w, r in zip(words, repeated) if r) / sum(map(len, words))


@lru_cache(maxsize=1)
def language_identifier():
    """py3langid's identifier, loaded once per process. It ships its model inside the package (nothing is
    downloaded); loading takes a moment and a transient peak (the model's arrays unpacked into Python lists;
    docs/web-input.md "Figures behind the code's comments"), so a stage loads it before it holds any data of
    its own: that transient then sets no higher peak."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's prose, or None when there is too little prose to tell."""
    prose = _CODE_FENCE.sub(" ", text)
    sample = prose[:LANGUAGE_SAMPLE_CHARS]
    if len(_LETTER.findall(sample)) < MIN_LANGUAGE_LETTERS:
        return None
    return language_identifier().classify(sample)[0]


class SegmentFilter:
    """The per-segment filters configured by `data.web`; `reason()` says why a segment goes, or None."""

    def __init__(self, params: WebDataParams):
        self.min_chars, self.max_chars = params.min_chars, params.max_chars
        self.max_repetition, self.language = params.max_repetition, params.language
        self.undetermined = 0  # segments kept because their language could not be told
        self.junk_stripped = 0  # segments kept with their junk words cut out
        self.rater_segments = 0  # segments that had rater-directed text removed
        self.rater_passages = 0  # sentences and lines removed from them

    def clean(self, segment: Segment) -> tuple[Segment, str | None]:
        """The segment without junk and rater-directed text, and `junk` when it is mostly junk, or the reason
        its header or its length drops it (checked before the rater pass; `text_reason` does the rest)."""
        text = segment.text
        if has_junk(text):
            if junk_share(text) > MAX_JUNK_SHARE:
                return segment, "junk"
            text = strip_junk(text)
            self.junk_stripped += 1
        header = segment.header
        if header and has_junk(header):
            header = " ".join(JUNK.sub(" ", header).split())
        # Removing rater-directed text only shortens the text and never touches the header, so a segment these
        # two drop is dropped whatever it holds: it needs no rater pass (many of a crawl's segments:
        # docs/web-input.md "Figures behind the code's comments").
        if header is not None and (problem := header_problem(header)):
            return segment, problem
        if len(text) < self.min_chars:
            return segment, "too_short"
        text, removed = remove_rater_text(text)
        if removed:
            self.rater_segments += 1
            self.rater_passages += removed
        if text is segment.text and header == segment.header:
            return segment, None
        return replace(segment, text=text, header=header), None

    def reason(self, segment: Segment) -> str | None:
        if segment.header is not None and (problem := header_problem(segment.header)):
            return problem
        return self.text_reason(segment.text)

    def text_reason(self, text: str) -> str | None:
        """The filters on the text alone: all `reason` checks after a segment's header passed (as `clean`'s
        did: a cleaned segment needs only these)."""
        if len(text) < self.min_chars:
            return "too_short"
        if len(text) > self.max_chars:
            return "too_long"
        if self.max_repetition < 1 and repetition(text) > self.max_repetition:
            return "repetitive"
        if self.language:
            detected = detect_language(text)
            if detected is None:
                self.undetermined += 1
            elif detected != self.language:
                return "language"
        return None
