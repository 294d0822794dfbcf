"""Seed source `python-faq`: the Python FAQ (Debian's python3.11-doc) as (question, answer) pairs.

The FAQ's reStructuredText sources sit beside the HTML at `<root>/_sources/faq/*.rst.txt`. Every
question is a leaf section (a heading with no sub-headings); its heading becomes the instruction and its
body, converted to readable text, the output. Category headings ("Core Language") have sub-sections and
are not pairs; the document title (the file's first adornment style) is skipped too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from humpback.params import SeedDataParams
from humpback.sources.counts import Counts, SourceError
from humpback.sources.rst import inline_to_text, rst_to_text, split_sections

DEFAULT_ROOT = "/usr/share/doc/python3.11/html"
FAQ_DIR = Path("_sources") / "faq"
SKIP_FILES = {"index.rst.txt"}  # the FAQ's table of contents, no questions


def faq_files(root: str | Path) -> list[Path]:
    folder = Path(root) / FAQ_DIR
    if not folder.is_dir():
        raise SourceError(
            f"python-faq: {folder} not found; install Debian's python3.11-doc "
            "(apt-get install python3.11-doc) or set data.seed.path to a Sphinx docs root"
        )
    return sorted(p for p in folder.glob("*.rst.txt") if p.name not in SKIP_FILES)


def read_seed(params: SeedDataParams, counts: Counts) -> list[dict[str, Any]]:
    """Every FAQ entry with a non-empty answer, in file then document order."""
    pairs = []
    for path in faq_files(params.path or DEFAULT_ROOT):
        for pair in faq_pairs(path.read_text(encoding="utf-8"), path.name.removesuffix(".rst.txt")):
            counts.read += 1
            if not pair["instruction"]:
                counts.drop("empty_instruction")
            elif not pair["output"]:
                counts.drop("empty_output")
            else:
                pairs.append(pair)
    return pairs


def faq_pairs(text: str, name: str) -> list[dict[str, Any]]:
    """One pair per question section of one FAQ file (empty answers included; the caller counts them)."""
    pairs, seen = [], set()
    for section in split_sections(text):
        if section.level == 0 or section.has_children:
            continue
        instruction = " ".join(inline_to_text(section.title).split())
        slug = _unique(_slug(instruction), seen)
        pairs.append(
            {
                "id": f"python-faq/{name}#{slug}",
                "instruction": instruction,
                "output": rst_to_text(section.body),
                "source": "python-faq",
            }
        )
    return pairs


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def _unique(slug: str, seen: set[str]) -> str:
    candidate, k = slug, 2
    while candidate in seen:
        candidate, k = f"{slug}-{k}", k + 1
    seen.add(candidate)
    return candidate
