"""Every metrics file dvc.yaml's report stage depends on, each with the keys its stage always writes: the report
reads them without fallbacks, so a test writes this complete set first and then its own files over it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from humpback.storage.records import write_json

KINDS = ("good", "mismatched", "truncated", "navigation", "forum")


def _curator(name: str, auc: float) -> dict:
    """A curation_quality metrics file with two methods (pmi, selected by default, and the length baseline)."""
    by_kind = {k: {"n": 10, "mean_score": 3.0 - i * 0.4, "selected_share": 0.8 - i * 0.15} for i, k in enumerate(KINDS)}
    pmi = {
        "precision": 0.625,
        "recall": 0.5,
        "roc_auc": auc,
        "roc_auc_ci": [auc - 0.1, auc + 0.08],
        "length_roc_auc": 0.55,
        "length_roc_auc_ci": [0.45, 0.66],
        "n": 50,
        "n_positive": 10,
        "n_selected": 8,
        "unparsed": 0,
        "by_kind": by_kind,
        "threshold": 10.0,
        "seconds_per_pair": 0.41,
        "sweep": {},
    }
    length = {**pmi, "roc_auc": 0.55, "roc_auc_ci": [0.45, 0.66], "precision": None, "recall": None}
    length.update(n_selected=None, threshold=None, seconds_per_pair=0.0)
    return {"model": name, "method": "pmi", **pmi, "methods": {"pmi": pmi, "length": length}}


def write_dag_metrics(metrics: str | Path, curators: Sequence[str] = ("base", "m0", "m1")) -> None:
    """The report stage's metrics inputs for a small plausible run (no in-domain set, no head to head); the
    curation_quality curators not in `curators` are written as skipped."""
    metrics = Path(metrics)
    for name, (read, kept) in {
        "prepare_seed": (60, 40),
        "prepare_web": (1500, 1000),
        "sample_web": (1000, 64),
        "prepare_eval": (80, 80),
        "prepare_dev": (120, 50),
        "augment": (64, 60),
    }.items():
        dropped = {"too_short": read - kept, "duplicate": 0}
        write_json(metrics / f"{name}.json", {"read": read, "kept": kept, "dropped": dropped})
    write_json(metrics / "select" / "1.json", {"iteration": 1, "n": 60, "selected": 20})
    overlap = {"shared": 18, "only_this": 2, "only_previous": 2, "jaccard": 0.82, "identical": False}
    write_json(
        metrics / "select" / "2.json", {"iteration": 2, "n": 60, "selected": 20, "overlap_with_previous": overlap}
    )
    for role, (seed, web, loss) in {
        "backward": (40, 0, 2.5),
        "m0": (40, 0, 2.31),
        "m1": (40, 20, 2.27),
        "m2": (40, 20, 2.26),
    }.items():
        write_json(
            metrics / "train" / f"{role}.json",
            {
                "final_loss": loss,
                "steps": (seed + web) // 8,
                "examples": seed + web,
                "examples_seed": seed,
                "examples_augmented": web,
                "trained_tokens": 9000 + 200 * web,
                "seconds": 140.0 + 3 * web,
            },
        )
    model = {
        "win_rate": 50.0,
        "standard_error": 10.0,
        "n": 16,
        "avg_length": 600.0,
        "order_agreement": 0.75,
        "position_bias": False,
        "unparsed": 0,
    }
    write_json(
        metrics / "evaluate.json",
        {
            "reference": "base",
            "reference_avg_length": 580.0,
            "judge": {
                "kind": "local",
                "model": "models/base",
                "annotator": "each answer scored alone",
                "max_chars": 800,
            },
            "length_controlled_reason": None,
            "models": {m: {**model, "win_rate": w} for m, w in (("m0", 50.0), ("m1", 53.1), ("m2", 56.2))},
            "head_to_head": {},
            "indomain": {},
        },
    )
    for name, auc in (("base", 0.61), ("m0", 0.7), ("m1", 0.74), ("curator", 0.8)):
        path = metrics / "curation_quality" / f"{name}.json"
        write_json(
            path, _curator(name, auc) if name in curators else {"model": name, "skipped": "curate.model is self"}
        )
