"""Stage report: one readable page of the run (metrics/report.md) from the metrics the stages wrote."""

from __future__ import annotations

import argparse
from pathlib import Path

from humpback.records import atomic_path, read_json
from humpback.report import render


def _load(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--metrics-dir", default="metrics")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    root = Path(args.metrics_dir)
    data = {name: m for name in ["prepare_seed", "prepare_web", "prepare_eval", "prepare_dev", "augment"]
            if (m := _load(root / f"{name}.json"))}
    data.update({f"curate@{i}": m for i in (1, 2) if (m := _load(root / "curate" / f"{i}.json"))})
    training = {role: m for role in ["backward", "m0", "m1", "m2"] if (m := _load(root / "train" / f"{role}.json"))}
    curation = [m for name in ["m0", "m1"] if (m := _load(root / "curation_quality" / f"{name}.json"))]
    text = render(_load(root / "evaluate.json"), curation, data=data, training=training)
    with atomic_path(args.out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(f"report: wrote {args.out}")


if __name__ == "__main__":
    main()
