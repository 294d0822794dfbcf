"""How well a curator separates good from bad answers on the labelled dev set, for every curation method.

`curation.score_dev_set` rates the dev rows with every method through `scoring.score_pairs` (the code the score
stage uses); `curation_quality_metrics` here reports per method: ROC-AUC with a bootstrap 95% interval, precision /
recall of the selection at the method's `curate.threshold`, a threshold sweep, the per-kind mean score and
selected share (which kinds of bad answer slip through), and the seconds per pair. Answer length is scored as
the baseline row every method must beat. Used by the curation_quality stage and benchmarks/curators.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from humpback.curation import methods
from humpback.curation.devset import KINDS, curation_metrics

# The dev-set intervals are an instrument: they never move with any of the run's seeds.
BOOTSTRAP_SEED = 0


def curation_quality_metrics(scored: Sequence[dict[str, Any]], params) -> dict[str, Any]:
    """Per method: ROC-AUC with its bootstrap interval, precision / recall at `curate.threshold.<method>`, the
    per-kind view and a threshold sweep: the cheap half, rerun alone when a threshold moves.

    {"method", "threshold", <curate.method's metrics at top level: precision, recall, roc_auc, ...>,
    "methods": {method: metrics}}."""
    labels, kinds = [r["label"] for r in scored], [r["kind"] for r in scored]
    lengths = [len(r["output"]) for r in scored]
    method_names = list(scored[0]["by_method"]) if scored else []
    per_method: dict[str, dict[str, Any]] = {}
    for method in method_names:
        reads = [r["by_method"][method] for r in scored]
        values = [x["score"] for x in reads]
        baseline = method == methods.BASELINE
        threshold = None if baseline else getattr(params.curate.threshold, method)
        selected = [not baseline and _passes(x, threshold) for x in reads]
        m = curation_metrics(
            labels, kinds, values, selected, lengths, bootstrap=params.curation_quality.bootstrap, seed=BOOTSTRAP_SEED
        )
        if baseline:  # no selection by length: precision / recall are not defined
            m.update(precision=None, recall=None, n_selected=None)
        m["threshold"] = threshold
        m["seconds_per_pair"] = reads[0]["seconds_per_pair"] if reads else None
        m["sweep"] = {}
        for t in () if baseline else methods.method(method).sweep:
            at_t = curation_metrics(labels, kinds, values, [_passes(x, t) for x in reads], lengths)
            m["sweep"][str(t)] = {k: at_t[k] for k in ("precision", "recall", "n_selected")}
        per_method[method] = m
    default = params.curate.method
    top = dict(per_method[default]) if default in per_method else {}
    threshold = getattr(params.curate.threshold, default) if default in per_method else None
    return {"method": default, "threshold": threshold, **top, "methods": per_method}


def _passes(read: dict[str, Any], threshold: float) -> bool:
    return read["parsed"] and read["score"] is not None and read["score"] >= threshold


# ------------------------------------------------------------------------------------------- presentation


def table_rows(by_curator: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per (curator, method), in the order the metrics list them."""
    out = []
    for curator, metrics in by_curator.items():
        for method, m in (metrics.get("methods") or {}).items():
            out.append(
                {
                    "curator": curator,
                    "method": method,
                    "roc_auc": m.get("roc_auc"),
                    "ci": m.get("roc_auc_ci"),
                    "threshold": m.get("threshold"),
                    "precision": m.get("precision"),
                    "recall": m.get("recall"),
                    "n_selected": m.get("n_selected"),
                    "n": m.get("n"),
                    "seconds_per_pair": m.get("seconds_per_pair"),
                    "by_kind": m.get("by_kind", {}),
                    "default": method == metrics.get("method"),
                }
            )
    return out


def markdown_table(by_curator: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The curation-quality table: every curator × method with its interval, selection and per-kind view."""
    negatives = [k for k in KINDS if k != "good"]
    lines = [
        "| curator | method | ROC-AUC [95% CI] | threshold | precision | recall | selected | s/pair | "
        + " | ".join(f"{k} kept" for k in negatives)
        + " |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(negatives),
    ]
    for r in table_rows(by_curator):
        kept = [
            r["by_kind"].get(k, {}).get("selected_share") if r["threshold"] is not None else None for k in negatives
        ]
        name = f"**{r['method']}**" if r["default"] else r["method"]
        selected = "n/a" if r["n_selected"] is None else f"{r['n_selected']}/{r['n']}"
        lines.append(
            f"| {r['curator']} | {name} | {_fmt(r['roc_auc'])} {_fmt_ci(r['ci'])} | {_fmt(r['threshold'])} | "
            f"{_fmt(r['precision'])} | {_fmt(r['recall'])} | {selected} | {_fmt(r['seconds_per_pair'])} | "
            + " | ".join(_fmt(x) for x in kept)
            + " |"
        )
    return lines


def plot_curation_quality(by_curator: Mapping[str, Mapping[str, Any]], out: str | Path, title: str = "") -> None:
    """Left: ROC-AUC per method with its 95% interval, one bar per curator (length baseline included, chance
    at 0.5). Right: the share of each kind each curator × method selects at its threshold (good should be
    high, every other kind low)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from humpback.storage.plotting import save_figure

    rows = table_rows(by_curator)
    curators = list(by_curator)
    method_names = list(dict.fromkeys(r["method"] for r in rows))
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, max(3.5, 0.32 * len(rows) + 1.5)), gridspec_kw={"width_ratios": [1, 1]}
    )
    height = 0.8 / max(1, len(curators))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c, curator in enumerate(curators):
        ys, xs, errs = [], [], [[], []]
        for m_i, method in enumerate(method_names):
            r = next((r for r in rows if r["curator"] == curator and r["method"] == method), None)
            if r is None or r["roc_auc"] is None:
                continue
            ys.append(m_i + c * height)
            xs.append(r["roc_auc"])
            ci = r["ci"] or [r["roc_auc"], r["roc_auc"]]
            errs[0].append(r["roc_auc"] - ci[0])
            errs[1].append(ci[1] - r["roc_auc"])
        left.barh(ys, xs, height=height, xerr=errs, color=colors[c % len(colors)], label=curator, capsize=2)
    left.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    left.set_yticks([i + height * (len(curators) - 1) / 2 for i in range(len(method_names))], method_names)
    left.invert_yaxis()
    left.set_xlim(0, 1)
    left.set_xlabel("ROC-AUC on the dev set (95% bootstrap interval)")
    if curators:
        left.legend(fontsize=8, loc="lower right")

    selecting = [r for r in rows if r["threshold"] is not None]
    if selecting:
        grid = np.array(
            [[r["by_kind"].get(k, {}).get("selected_share", np.nan) for k in KINDS] for r in selecting], dtype=float
        )
        right.imshow(grid, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not np.isnan(grid[i, j]):
                    right.text(
                        j,
                        i,
                        f"{grid[i, j]:.0%}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if grid[i, j] > 0.6 else "black",
                    )
        right.set_xticks(range(len(KINDS)), KINDS, fontsize=8)
        right.set_yticks(range(len(selecting)), [f"{r['curator']} / {r['method']}" for r in selecting], fontsize=7)
        right.set_title("share selected at the threshold, by kind (good: high; the rest: low)", fontsize=9)
    else:
        right.axis("off")
    fig.suptitle(title or "curation quality", fontsize=10)
    save_figure(fig, out, dpi=100)


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _fmt_ci(ci: Sequence[float] | None) -> str:
    return "" if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"
