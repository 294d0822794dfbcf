"""Stage curation_quality: how well a curator separates good from bad answers on the labelled dev set.

The curator rates every dev pair with every method of `curation_quality.methods` (and `curate.method`) through
exactly the code of the curate stage (`scoring.score_pairs`, selection by `scoring.is_selected` at
`curate.threshold.<method>`), in one run. Reported per method like the paper's curation-quality table
(precision and recall of the selection against label 1) plus ROC-AUC with a bootstrap 95% interval, the
per-kind mean score and selected share, a threshold sweep and the seconds per pair; answer length is the
baseline row every method must beat. The configured method's figures stay at the top level of the metrics
file (`precision`, `recall`, `roc_auc`) for the report and `dvc exp show`. A PNG compares the methods.

Curators: `base` (the untrained base model), `m0`, `m1` (with the system prompt they were trained with:
`--tagged`), and `curator` (the model named by `curate.model`; skipped with a note when it is `self`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from humpback.curation_quality import evaluate_curator, markdown_table, plot_curation_quality
from humpback.generation import make_engine
from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, load_params
from humpback.records import RecordError, iter_jsonl, write_json, write_jsonl

log = logging.getLogger("curation_quality")


def rate_dev_set(engine, rows, params, tagging: bool | None = None, methods=None):
    """Score every dev row with every method; return the rows with their scores and the metrics."""
    tagging = params.train.tagging if tagging is None else tagging
    return evaluate_curator(engine, rows, params, tagging=tagging, methods=methods, log=log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="curator model folder (models/m0)")
    parser.add_argument("--name", help="the curator's name in the metrics (default: the folder's name)")
    parser.add_argument("--tagged", action=argparse.BooleanOptionalAction, default=False,
                        help="a model this project trained: prompt it with the system prompt of its training "
                             "(S_a when train.tagging)")
    parser.add_argument("--dev", required=True, help="labelled dev set (data/dev.jsonl)")
    parser.add_argument("--out", required=True, help="every dev row with its scores (JSONL)")
    parser.add_argument("--metrics", required=True, help="precision / recall / AUC per method (JSON)")
    parser.add_argument("--plot", help="methods compared (PNG)")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    name = args.name or Path(args.model).name

    try:
        params = load_params(args.params)
        rows = [r for _, r in iter_jsonl(args.dev, required=("id", "instruction", "output", "kind"))]
    except (ParamsError, RecordError) as exc:
        print(f"curation_quality: {exc}", file=sys.stderr)
        return 1

    from stages.prepare_curator import is_self

    if is_self(args.model):  # the `curator` item while curate.model is self: m0 and m1 are the curators
        note = "curate.model is self: the curators are m0 and m1 (see their metrics)"
        write_jsonl(args.out, [])
        write_json(args.metrics, {"model": name, "skipped": note})
        if args.plot:
            plot_curation_quality({}, args.plot, title=f"{name}: {note}")
        log.info("%s: %s", name, note)
        return 0

    engine = make_engine(args.model, params.generation)
    tagging = params.train.tagging and args.tagged
    scored, metrics = rate_dev_set(engine, rows, params, tagging=tagging)
    reference = params.curate.model if name == "curator" else args.model
    write_jsonl(args.out, scored)
    write_json(args.metrics, {"model": name, "reference": reference, "tagged": tagging, **metrics})
    if args.plot:
        plot_curation_quality({name: metrics}, args.plot, title=f"curation quality of {name} ({len(rows)} dev pairs)")
    print("\n".join(markdown_table({name: metrics})))
    log.info("%s: %s precision %s, recall %s, ROC-AUC %s (length alone %s), n=%d", name, metrics["method"],
             metrics.get("precision"), metrics.get("recall"), metrics.get("roc_auc"), metrics.get("length_roc_auc"),
             len(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
