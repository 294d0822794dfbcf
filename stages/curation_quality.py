"""Stage curation_quality@{base,m0,m1,curator}: how well a curator's scores separate good from bad dev pairs.

The cheap half (score_dev did the reads): per method, precision and recall of the selection at
`curate.threshold.<method>` (the paper's curation-quality table), ROC-AUC with a bootstrap 95% interval, the
per-kind view and a threshold sweep, with answer length as the baseline every method must beat.
"""

from __future__ import annotations

import sys

from humpback.curation.quality import curation_quality_metrics, markdown_table, plot_curation_quality
from humpback.stage_runner import stage
from humpback.storage.records import iter_jsonl, write_json


def arguments(parser) -> None:
    parser.add_argument("--name", required=True, help="the curator's name (base, m0, m1, curator)")
    parser.add_argument("--scored", required=True, help="score_dev's output (data/curation_quality/<name>.jsonl)")
    parser.add_argument("--metrics", required=True, help="precision / recall / ROC-AUC per method (JSON)")
    parser.add_argument("--plot", required=True, help="methods compared (PNG)")


def run(args, params) -> None:
    scored = [r for _, r in iter_jsonl(args.scored, required=("kind", "output"))]
    if not scored:
        note = "curate.model is self: the curators are m0 and m1 (see their metrics)"
        write_json(args.metrics, {"model": args.name, "skipped": note})
        plot_curation_quality({}, args.plot, title=f"{args.name}: {note}")
        return
    metrics = {"model": args.name, **curation_quality_metrics(scored, params)}
    write_json(args.metrics, metrics)
    plot_curation_quality(
        {args.name: metrics}, args.plot, title=f"curation quality of {args.name} ({len(scored)} dev pairs)"
    )
    print("\n".join(markdown_table({args.name: metrics})))


main = stage("curation_quality", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
