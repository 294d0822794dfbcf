"""Stage curation_quality: how well a curator separates good from bad answers on the labelled dev set.

The curator rates every dev pair with exactly the code of the curate stage (`scoring.score_pairs`, selection by
`scoring.is_selected` at `curate.threshold`). Reported like the paper's curation-quality table: precision and
recall of the selection against label 1, plus ROC-AUC of the score, the AUC of output length alone (a
baseline any useful curator must beat), per-kind mean scores, and a threshold sweep.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from humpback import scoring
from humpback.devset import curation_metrics
from humpback.generation import make_engine
from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, load_params
from humpback.records import RecordError, iter_jsonl, write_json, write_jsonl

log = logging.getLogger("curation_quality")

SWEEP = (2.0, 3.0, 3.5, 4.0, 4.5, 5.0)


def rate_dev_set(engine, rows: list[dict[str, Any]], params) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score every dev row; return the rows with their scores and the metrics."""
    scores = scoring.score_pairs(engine, rows, params.curate, tagging=params.train.tagging, seed=params.base.seed)
    selected = [scoring.is_selected(s, params.curate.threshold) for s in scores]
    scored = [
        {**row, "score": s.score, "score_argmax": s.argmax, "probs": s.probs, "raw": s.raw, "parsed": s.parsed,
         "selected": sel}
        for row, s, sel in zip(rows, scores, selected)
    ]
    labels, kinds = [r["label"] for r in rows], [r["kind"] for r in rows]
    values, lengths = [s.score for s in scores], [len(r["output"]) for r in rows]
    metrics = curation_metrics(labels, kinds, values, selected, lengths)
    metrics["threshold"] = params.curate.threshold
    metrics["method"] = params.curate.method
    # The same scores at other thresholds: the precision / recall trade-off without rerunning the curator.
    metrics["sweep"] = {}
    for t in SWEEP:
        at_t = curation_metrics(labels, kinds, values, [scoring.is_selected(s, t) for s in scores], lengths)
        metrics["sweep"][str(t)] = {k: at_t[k] for k in ("precision", "recall", "n_selected")}
    return scored, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="curator model folder (models/m0)")
    parser.add_argument("--dev", required=True, help="labelled dev set (data/dev.jsonl)")
    parser.add_argument("--out", required=True, help="every dev row with its score (JSONL)")
    parser.add_argument("--metrics", required=True, help="precision / recall / AUC (JSON)")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    try:
        params = load_params(args.params)
        rows = [r for _, r in iter_jsonl(args.dev, required=("id", "instruction", "output", "kind"))]
    except (ParamsError, RecordError) as exc:
        print(f"curation_quality: {exc}", file=sys.stderr)
        return 1

    engine = make_engine(args.model, params.generation)
    scored, metrics = rate_dev_set(engine, rows, params)
    write_jsonl(args.out, scored)
    write_json(args.metrics, {"model": Path(args.model).name, **metrics})
    log.info("%s: precision %s, recall %s, ROC-AUC %s (length alone %s), n=%d", Path(args.model).name,
             metrics["precision"], metrics["recall"], metrics["roc_auc"], metrics["length_roc_auc"], metrics["n"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
