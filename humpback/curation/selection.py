"""Self-curation, the cheap half: the scored pairs at a score level, then optionally only the N best. A separate
stage from scoring (humpback/curation/curator.py), so a threshold or cap sweep never re-scores a pair.

The paper's A(k) is the set of pairs a curator rates at or above level k. The level is either a threshold on the
method's scale or a rank: the top share of the scored pairs by the curator's own scores. At a small pool a fixed
threshold in nats can keep the same pairs for M0 and for M1 even where M1 ranks them differently; a rank level
follows each curator's ranking (docs/default-run.md measures it).
"""

from __future__ import annotations

import math
from collections import Counter
from statistics import fmean
from typing import Any

from humpback.curation import methods
from humpback.sources.sampling import sample_indices
from humpback.storage.plotting import save_figure


def threshold_of(params, iteration: int) -> float | None:
    """The iteration's threshold on curate.method's scale; None for `none` (no threshold)."""
    method = params.curate.method
    if method == methods.NO_CURATION:
        return None
    chosen = getattr(params.select, f"iteration_{iteration}").threshold
    return getattr(params.curate.threshold, method) if chosen == "default" else float(chosen)


def top_share_of(params, iteration: int) -> float:
    """The iteration's rank level: the share of scored pairs that may be kept, best first (1.0 = no limit)."""
    share = getattr(params.select, f"iteration_{iteration}").top_share
    if not 0.0 < share <= 1.0:
        raise ValueError(f"select.iteration_{iteration}.top_share must be in (0, 1], got {share}")
    return share


def rank_limit(n_scored: int, top_share: float) -> int:
    """How many pairs a top share of `n_scored` keeps: rounded down, so a share never keeps more than it says."""
    return n_scored if top_share >= 1.0 else math.floor(top_share * n_scored)


def select(
    scored: list[dict], method: str, threshold: float | None, cap: int, seed: int, top_share: float = 1.0
) -> list[dict]:
    """The pairs at or above `threshold` (never an unparsed one) and within the `top_share` of all scored pairs by
    score, then the `cap` best-scored (0 = all), in input order. With no curator (`threshold` None) every pair
    passes and a share or a cap keeps a seeded sample of that size."""
    limit = min(cap or len(scored), rank_limit(len(scored), top_share))
    if threshold is None:
        passing = list(scored)
        if len(passing) > limit:
            passing = [passing[i] for i in sample_indices(len(passing), limit, seed, "uncurated-cap")]
        return passing
    passing = [r for r in scored if r["parsed"] and r["score"] is not None and r["score"] >= threshold]
    if len(passing) > limit:
        # best first; ties broken by id so the cut never depends on input order
        best = sorted(passing, key=lambda r: (-r["score"], str(r["id"])))[:limit]
        keep = {id(r) for r in best}
        passing = [r for r in passing if id(r) in keep]
    return passing


def _lengths(rows: list[dict]) -> dict[str, float]:
    return {
        "instruction_chars": round(fmean(len(r["instruction"]) for r in rows), 1) if rows else 0.0,
        "output_chars": round(fmean(len(r["output"]) for r in rows), 1) if rows else 0.0,
    }


def histogram(scored: list[dict], method: str, bins: int = 20) -> dict[str, int]:
    """Digit methods: pairs per likeliest / parsed score 1..5; continuous ones: pairs per equal-width bin of the
    score, keyed by the bin's lower edge; `none`: nothing to bin."""
    if method == methods.NO_CURATION:
        return {}
    if methods.method(method).histogram == "digits":
        digits = Counter(r["score_argmax"] for r in scored if r["parsed"])
        return {str(k): digits.get(k, 0) for k in range(1, 6)}
    values = [r["score"] for r in scored if r["parsed"]]
    if not values:
        return {}
    low, width = min(values), (max(values) - min(values)) / bins or 1.0
    counts = Counter(min(int((v - low) / width), bins - 1) for v in values)
    return {f"{low + b * width:.6g}": counts.get(b, 0) for b in range(bins)}


def overlap(selected: list[dict], previous: list[dict]) -> dict[str, Any]:
    """How far this iteration's selection moved from the previous one: shared pairs, and each side's own."""
    ids, before = {str(r["id"]) for r in selected}, {str(r["id"]) for r in previous}
    union = ids | before
    return {
        "shared": len(ids & before),
        "only_this": len(ids - before),
        "only_previous": len(before - ids),
        "jaccard": round(len(ids & before) / len(union), 4) if union else 1.0,
        "identical": ids == before,
    }


def selection_metrics(
    scored: list[dict], selected: list[dict], method: str, threshold: float | None, cap: int, top_share: float = 1.0
) -> dict[str, Any]:
    passing = len(select(scored, method, threshold, 0, 0))
    return {
        "method": method,
        "threshold": threshold,
        "top_share": top_share,
        "cap": cap,
        "n": len(scored),
        "at_threshold": passing,  # before the share and the cap
        "selected": len(selected),
        "selected_share": round(len(selected) / len(scored), 4) if scored else 0.0,
        "histogram": histogram(scored, method),
        "lengths_all": _lengths(scored),
        "lengths_selected": _lengths(selected),
    }


def plot_histogram(scored: list[dict], metrics: dict, iteration: int, out: str) -> None:
    """Digit methods: bars of the integer scores; continuous ones: the scores with the threshold where it cuts."""
    import matplotlib.pyplot as plt

    method = metrics["method"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    values = [r["score"] for r in scored if r["parsed"]]
    if method == methods.NO_CURATION:
        ax.text(0.5, 0.5, "curate.method: none (no curator, every pair kept)", ha="center", transform=ax.transAxes)
    elif methods.method(method).histogram == "digits":
        ax.bar(range(1, 6), [metrics["histogram"].get(str(k), 0) for k in range(1, 6)], color="#4c72b0")
        ax.set(xlabel="parsed score" if method == "generate" else "likeliest score", ylabel="pairs")
    else:
        ax.hist(values, bins=30, color="#4c72b0")
        ax.axvline(metrics["threshold"], color="#c44e52", linestyle="--", label="threshold")
        ax.set(xlabel=f"{method} score ({methods.method(method).scale})", ylabel="pairs")
        ax.legend(fontsize=8)
    share = metrics.get("top_share", 1.0)
    ax.set_title(
        f"selection@{iteration}: {metrics['selected']}/{metrics['n']} selected (threshold "
        f"{metrics['threshold']}{f', top {share:.0%}' if share < 1 else ''}, cap {metrics['cap'] or 'none'})",
        fontsize=9,
    )
    save_figure(fig, out)
