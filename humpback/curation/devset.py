"""The labelled curation dev set, and how a curator is scored on it.

The paper measures its curators on a labelled dev set (precision / recall of the selection). Ours is built
from held-out seed pairs that no model ever trains on:

- `good` (label 1): a held-out question with its own human answer;
- label-0 kinds, one per failure the curation rubric names (Table 19 of the paper):
  `mismatched` (another question's answer: off-topic), `truncated` (the answer cut mid-sentence at about a
  third: incomplete), `navigation` (menu / pager / promotional boilerplate, built from real page headers),
  `forum` (a first-person forum reply around a fragment of the real answer).

Everything is drawn with a `random.Random` seeded by the fixed `DEV_SEED`, so the set is byte-identical across runs
and experiments.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

KINDS = ("good", "mismatched", "truncated", "navigation", "forum")
NEGATIVE_KINDS = KINDS[1:]

# Cut point of a truncated answer, as a share of its characters.
TRUNCATE_RANGE = (0.25, 0.35)
MIN_TRUNCATE_CHARS = 150

# Boilerplate vocabulary of documentation sites, shops and blogs: what a header-anchored web segment picks up
# when the page's chrome leaks into the text.
MENU_WORDS = [
    "Home",
    "Docs",
    "Downloads",
    "Community",
    "About",
    "Blog",
    "Search",
    "Log in",
    "Sign up",
    "Contact",
    "FAQ",
    "Support",
    "Pricing",
    "Careers",
    "News",
    "Events",
    "Tutorials",
    "API",
    "Forum",
    "Shop",
]
PAGER_LINES = [
    "Previous topic",
    "Next topic",
    "This page",
    "Report a bug",
    "Show source",
    "Table of contents",
    "Quick search",
    "Navigation",
    "index",
    "modules",
    "next",
    "previous",
    "Skip to main content",
    "Back to top",
    "Edit on GitHub",
    "Was this page helpful? Yes No",
]
PROMO_LINES = [
    "Subscribe to our newsletter",
    "Sign up for our newsletter and get 20% off your first order!",
    "Join 10,000+ developers who get our weekly tips.",
    "Download the free e-book today.",
    "Follow us on Twitter, Facebook and LinkedIn.",
    "Try it free for 30 days - no credit card required.",
    "We use cookies to improve your experience. Accept all cookies",
    "Privacy policy | Terms of use",
]
ORGANISATIONS = ["Python Software Foundation", "Example Software Inc.", "DevDocs Network", "The Authors"]
# Section titles for when the web data carries no headers (e.g. a plain-text jsonl source).
FALLBACK_HEADERS = ["Getting started", "Installation", "Reference", "Release notes", "Glossary", "Examples"]

FORUM_OPENERS = [
    "I had the same problem last week.",
    "Had the exact same issue a while ago!",
    "Not an expert but I ran into this too.",
    "Ugh, this bit me yesterday as well.",
    "Funny, my coworker asked me the same thing this morning.",
]
FORUM_MIDDLES = [
    "Not sure but maybe try this: {fragment}...",
    "What worked for me: {fragment}. YMMV though.",
    "Someone on another thread said {fragment}, but I haven't tested it myself.",
    "IIRC {fragment}? Could be wrong, it's been a while.",
]
FORUM_CLOSERS = ["Hope this helps!", "Good luck!", "Let us know if it works.", "Cheers", "HTH"]
FORUM_EDITS = [
    "Edit: fixed a typo.",
    "Edit: never mind, that only worked on my machine.",
    "EDIT: just saw this was already answered above, sorry.",
    "Edit: spelling. Also thanks for the upvotes!",
]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# The dev set is an instrument: drawn with this fixed seed, it never moves with the run's seeds.
DEV_SEED = 0


class DevSetError(ValueError):
    """Inputs too small to build the requested dev set."""


def build_dev_set(
    heldout: Sequence[dict[str, Any]],
    web: Sequence[dict[str, Any]],
    positives: int,
    negatives_per_kind: int,
    seed: int = DEV_SEED,
) -> list[dict[str, Any]]:
    """Rows {"id", "instruction", "output", "label", "kind", "source_id"} (source_id: the held-out pair used).

    Only `heldout` texts (and, for navigation, web page headers) go into the rows, so the set can overlap the
    training data only if the held-out split does.
    """
    pairs = sorted(heldout, key=lambda r: r["id"])  # input order must not matter, only the seed
    if not pairs:
        raise DevSetError("no held-out seed pairs: set data.seed.heldout > 0")
    if negatives_per_kind > 0 and len(pairs) < 2:
        raise DevSetError("mismatched negatives need at least 2 held-out pairs (data.seed.heldout)")
    rng = random.Random(f"humpback-dev:{seed}")

    rows = []
    order = list(range(len(pairs)))
    rng.shuffle(order)
    for i in order[:positives]:
        rows.append(_row("good", len(rows), pairs[i], pairs[i]["output"]))

    headers = [str(r.get("header") or "").strip() for r in web]
    headers = sorted({h for h in headers if h}) or FALLBACK_HEADERS
    makers = {
        "mismatched": lambda i: pairs[(i + rng.randrange(1, len(pairs))) % len(pairs)]["output"],
        "truncated": lambda i: truncate_mid_sentence(pairs[i]["output"], rng),
        "navigation": lambda i: navigation_boilerplate(headers, rng, target_chars=len(pairs[i]["output"])),
        "forum": lambda i: forum_reply(pairs[i]["output"], rng),
    }
    # Truncating a one-line answer says little: cut long answers when there are enough of them.
    long_answers = [i for i, p in enumerate(pairs) if len(p["output"]) >= MIN_TRUNCATE_CHARS]
    for kind in NEGATIVE_KINDS:
        pool = long_answers if kind == "truncated" and len(long_answers) >= negatives_per_kind else order
        for i in _draw(sorted(pool), negatives_per_kind, rng):
            rows.append(_row(kind, len(rows), pairs[i], makers[kind](i)))
    return rows


def dev_set_metrics(
    heldout: Sequence[dict[str, Any]], web: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """prepare_dev's counts. Every held-out pair is accounted for: used as a positive, or left out by
    curation_quality.positives (it may still lend its question to a negative)."""
    counts = dev_set_counts(rows)
    used = counts["by_kind"]["good"]
    return {
        "read": len(heldout),
        "kept": used,
        "dropped": {"beyond_positives": len(heldout) - used},
        "web_read": len(web),
        **counts,
    }


def dev_set_counts(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    by_kind = Counter(r["kind"] for r in rows)
    return {
        "rows": len(rows),
        "by_kind": {k: by_kind.get(k, 0) for k in KINDS},
        "by_label": {"1": sum(r["label"] == 1 for r in rows), "0": sum(r["label"] == 0 for r in rows)},
    }


def _row(kind: str, index: int, pair: dict[str, Any], output: str) -> dict[str, Any]:
    return {
        "id": f"dev-{index:04d}-{kind}",
        "instruction": pair["instruction"],
        "output": output,
        "label": 1 if kind == "good" else 0,
        "kind": kind,
        "source_id": pair["id"],
    }


def _draw(pool: Sequence[int], k: int, rng: random.Random) -> list[int]:
    """k items of pool, without repeats until every item has been used."""
    out: list[int] = []
    while len(out) < k:
        out += rng.sample(list(pool), min(len(pool), k - len(out)))
    return out


def truncate_mid_sentence(text: str, rng: random.Random) -> str:
    """The first ~25-35% of `text`, cut at a word boundary that is not a sentence end."""
    text = text.strip()
    cut = int(len(text) * rng.uniform(*TRUNCATE_RANGE))
    head = text[:cut]
    words = head.split(" ")
    if len(words) > 2:
        head = " ".join(words[:-1])  # drop the partial last word
    head = head.rstrip()
    # A cut right after "." would read as complete: step back one more word, then drop closing punctuation.
    while len(head.split(" ")) > 2 and head[-1:] in ".!?:;":
        head = head.rsplit(" ", 1)[0].rstrip()
    return head.rstrip(".!?:;,")


def navigation_boilerplate(headers: Sequence[str], rng: random.Random, target_chars: int = 0) -> str:
    """Page chrome: a menu bar, pager links around real section headers, promotion and a copyright line,
    padded with "related topics" (more real headers) towards `target_chars`, so length alone does not give
    it away."""
    menu = " | ".join(rng.sample(MENU_WORDS, 6))
    previous, following = rng.sample(list(headers), 2) if len(headers) > 1 else (headers[0], headers[0])
    pager = rng.sample(PAGER_LINES[5:], 4)  # the first five are always there, below
    start = rng.randrange(1995, 2012)
    lines = [
        menu,
        "Previous topic",
        previous,
        "Next topic",
        following,
        "This page",
        "Report a bug",
        "Show source",
        *pager,
        *rng.sample(PROMO_LINES, 2),
    ]
    related = [h for h in headers if h not in (previous, following)]
    rng.shuffle(related)
    if related and sum(len(x) + 1 for x in lines) < target_chars:
        lines.append("Related topics")
        while related and sum(len(x) + 1 for x in lines) < target_chars:
            lines.append(f"  {related.pop()}")
    lines.append(f"\u00a9 {start}-{rng.randrange(2020, 2025)} {rng.choice(ORGANISATIONS)}. All rights reserved.")
    return "\n".join(lines)


def forum_reply(answer: str, rng: random.Random, max_fragment_chars: int = 600) -> str:
    """A first-person forum reply built around a few consecutive sentences of the real answer."""
    sentences = [s for s in _SENTENCE_END.split(answer.strip()) if s.strip()] or [answer.strip()]
    first = rng.randrange(min(3, len(sentences)))
    fragment = sentences[first]
    for sentence in sentences[first + 1 : first + 3]:
        if len(fragment) + len(sentence) + 1 > max_fragment_chars:
            break
        fragment += " " + sentence
    fragment = fragment.rstrip(".!?:; ")
    if len(fragment) > max_fragment_chars:
        fragment = fragment[:max_fragment_chars].rsplit(" ", 1)[0]
    if fragment[:1].isupper() and not fragment[1:2].isupper():
        fragment = fragment[0].lower() + fragment[1:]
    middle = rng.choice(FORUM_MIDDLES).format(fragment=fragment)
    return f"{rng.choice(FORUM_OPENERS)} {middle} {rng.choice(FORUM_CLOSERS)}\n\n{rng.choice(FORUM_EDITS)}"


# ----------------------------------------------------------------------------------------- curator metrics


def curation_metrics(
    labels: Sequence[int],
    kinds: Sequence[str],
    scores: Sequence[float | None],
    selected: Sequence[bool],
    lengths: Sequence[int],
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Precision / recall of the selection against label 1 (the paper's curation-quality table), ROC-AUC of
    the score (unparsed = lowest), the AUC of output length alone as a baseline, and per-kind means.
    With `bootstrap` > 0, also 95% intervals of both AUCs (`roc_auc_ci`, `length_roc_auc_ci`)."""
    from sklearn.metrics import roc_auc_score

    n = len(labels)
    tp = sum(1 for y, s in zip(labels, selected) if y == 1 and s)
    n_selected = sum(bool(s) for s in selected)
    n_pos = sum(1 for y in labels if y == 1)
    parsed = [s for s in scores if s is not None and math.isfinite(s)]
    floor = (min(parsed) if parsed else 0.0) - 1.0
    ranked = [s if s is not None and math.isfinite(s) else floor for s in scores]

    def auc(values: Sequence[float]) -> float | None:
        # undefined with one class only (a dev set of positives, or of negatives)
        return float(roc_auc_score(labels, values)) if 0 < n_pos < n else None

    by_kind = {}
    for kind in KINDS:
        idx = [i for i, k in enumerate(kinds) if k == kind]
        if not idx:
            continue
        kind_scores = [scores[i] for i in idx if scores[i] is not None and math.isfinite(scores[i])]
        by_kind[kind] = {
            "n": len(idx),
            "mean_score": sum(kind_scores) / len(kind_scores) if kind_scores else None,
            "selected_share": sum(bool(selected[i]) for i in idx) / len(idx),
        }
    ci = {}
    if bootstrap > 0:
        from humpback.statistics import bootstrap_auc_ci

        ci = {
            "roc_auc_ci": bootstrap_auc_ci(labels, ranked, bootstrap, seed),
            "length_roc_auc_ci": bootstrap_auc_ci(labels, [float(x) for x in lengths], bootstrap, seed),
        }
    return {
        "precision": tp / n_selected if n_selected else None,
        "recall": tp / n_pos if n_pos else None,
        "roc_auc": auc(ranked),
        **({"roc_auc_ci": ci["roc_auc_ci"]} if ci else {}),
        "length_roc_auc": auc([float(x) for x in lengths]),
        **({"length_roc_auc_ci": ci["length_roc_auc_ci"]} if ci else {}),
        "n": n,
        "n_positive": n_pos,
        "n_selected": n_selected,
        "unparsed": n - len(parsed),
        "by_kind": by_kind,
    }
