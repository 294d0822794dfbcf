"""Stage report: one readable page of the run (metrics/report.md) from the metrics the stages wrote."""

from __future__ import annotations

import argparse
from pathlib import Path

from humpback.records import atomic_path, read_json, write_csv, write_json
from humpback.report import render


def _load(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def headline(evaluate: dict | None, curation: list[dict], data: dict[str, dict]) -> dict:
    """The few numbers worth a column in `dvc exp show`: win rates, curator quality, selection sizes."""
    models = (evaluate or {}).get("models", {})
    return {
        "win_rate": {name: m.get("win_rate") for name, m in models.items()},
        "curator": {m.get("model"): {k: m.get(k) for k in ("precision", "recall", "roc_auc")} for m in curation
                    if not m.get("skipped")},
        "selected": {name: m.get("selected") for name, m in data.items() if name.startswith("curate@")},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--metrics-dir", default="metrics")
    ap.add_argument("--out", required=True)
    ap.add_argument("--headline", help="the run's headline figures as one small metrics JSON (for dvc exp show)")
    ap.add_argument("--curation-plot", help="every curator × method's ROC-AUC and per-kind selection (PNG)")
    ap.add_argument("--curation-data", help="every curator × method's precision, recall, ROC-AUC (CSV, dvc plots)")
    args = ap.parse_args(argv)
    root = Path(args.metrics_dir)
    data = {name: m for name in ["prepare_seed", "prepare_web", "prepare_eval", "prepare_dev", "augment"]
            if (m := _load(root / f"{name}.json"))}
    data.update({f"curate@{i}": m for i in (1, 2) if (m := _load(root / "curate" / f"{i}.json"))})
    training = {role: m for role in ["backward", "m0", "m1", "m2"] if (m := _load(root / "train" / f"{role}.json"))}
    curation = [m for name in ["base", "m0", "m1", "curator"]
                if (m := _load(root / "curation_quality" / f"{name}.json"))]
    text = render(_load(root / "evaluate.json"), curation, data=data, training=training)
    with atomic_path(args.out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if args.curation_plot:
        from humpback.curation_quality import plot_curation_quality

        compared = {m["model"]: m for m in curation if m.get("methods")}
        plot_curation_quality(compared, args.curation_plot, title="curation quality: every curator × method")
    if args.curation_data:
        from humpback.curation_quality import table_rows

        rows = table_rows({m["model"]: m for m in curation if m.get("methods")})
        write_csv(args.curation_data, ["curator", "method", "curator_method", "precision", "recall", "roc_auc"],
                  [(r["curator"], r["method"], f"{r['curator']}/{r['method']}", r["precision"], r["recall"],
                    r["roc_auc"]) for r in rows])
    if args.headline:
        write_json(args.headline, headline(_load(root / "evaluate.json"), curation, data))
    print(f"report: wrote {args.out}")


if __name__ == "__main__":
    main()
