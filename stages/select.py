"""Stage select@{1,2}: the scored pairs at the iteration's level (threshold and top share), then its cap's N best
(cheap: a level or cap sweep reruns this, never the scoring). Writes the selection, its metrics (with its overlap
with the previous iteration's selection) and a score histogram."""

from __future__ import annotations

import logging
import sys

from humpback.curation.selection import (
    histogram,
    overlap,
    plot_histogram,
    select,
    selection_metrics,
    threshold_of,
    top_share_of,
)
from humpback.stage_runner import stage
from humpback.storage.records import iter_jsonl, write_csv, write_json, write_jsonl

log = logging.getLogger("select")


def arguments(parser) -> None:
    parser.add_argument("--iteration", type=int, required=True, choices=(1, 2))
    parser.add_argument("--scored", required=True, help="every pair with its score (data/curated/N/scored.jsonl)")
    parser.add_argument(
        "--previous", default=None, help="the previous iteration's selection, to report how far this one moved from it"
    )
    parser.add_argument("--out", required=True, help="the selected pairs (JSONL)")
    parser.add_argument("--metrics", required=True, help="selection size, histogram, lengths (JSON)")
    parser.add_argument("--plot", required=True, help="score histogram (PNG)")
    parser.add_argument("--plot-data", required=True, help="the histogram as CSV (score, pairs) for dvc plots")


def run(args, params) -> None:
    scored = [r for _, r in iter_jsonl(args.scored, required=("id", "instruction", "output"))]
    method, threshold = params.curate.method, threshold_of(params, args.iteration)
    top_share = top_share_of(params, args.iteration)
    cap = getattr(params.select, f"iteration_{args.iteration}").cap
    # only an uncurated run samples (its share or cap keeps a seeded sample)
    seed = params.seeds.sampling if threshold is None and (cap or top_share < 1) else 0
    selected = select(scored, method, threshold, cap, seed, top_share)
    metrics = {"iteration": args.iteration, **selection_metrics(scored, selected, method, threshold, cap, top_share)}
    if args.previous:
        metrics["overlap_with_previous"] = overlap(selected, [r for _, r in iter_jsonl(args.previous)])
    write_jsonl(args.out, selected)
    write_json(args.metrics, metrics)
    plot_histogram(scored, metrics, args.iteration, args.plot)
    write_csv(args.plot_data, ["score", "pairs"], list(histogram(scored, method).items()))
    if not selected:
        log.warning("no pair reached the level: the next model trains on seed data only")
    moved = metrics.get("overlap_with_previous")
    log.info(
        "select@%d: %d/%d pairs (threshold %s, top share %s, cap %s)%s -> %s",
        args.iteration,
        len(selected),
        len(scored),
        threshold,
        top_share,
        cap or "none",
        f", {moved['shared']} shared with the previous selection" if moved else "",
        args.out,
    )


main = stage("select", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
