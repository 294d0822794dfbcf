"""Stage prepare_dev: the labelled curation dev set, from held-out seed pairs and web page headers.

Positives are held-out (question, human answer) pairs; negatives are the failure kinds of the paper's rubric
(see humpback/curation/devset.py). The held-out pairs never reach training, so curators are scored on unseen data. The
headers come from the whole web pool, not the sample, so the set never moves with the sample's size or seed.
"""

from __future__ import annotations

import logging
import sys

from humpback.curation.devset import build_dev_set, dev_set_metrics
from humpback.stage_runner import stage
from humpback.storage.records import iter_jsonl, write_json, write_jsonl

log = logging.getLogger("prepare_dev")


def arguments(parser) -> None:
    parser.add_argument("--heldout", required=True, help="held-out seed pairs (data/seed_heldout.jsonl)")
    parser.add_argument("--web", required=True, help="web segments, for real page headers (data/web_pool.jsonl)")
    parser.add_argument("--out", required=True, help="dev set to write (data/dev.jsonl)")
    parser.add_argument("--metrics", required=True, help="counts to write (metrics/prepare_dev.json)")


def run(args, params) -> None:
    heldout = [r for _, r in iter_jsonl(args.heldout, required=("id", "instruction", "output"))]
    web = [r for _, r in iter_jsonl(args.web, required=("id", "text"))]
    quality = params.curation_quality
    rows = build_dev_set(heldout, web, quality.positives, quality.negatives_per_kind)
    write_jsonl(args.out, rows)
    metrics = dev_set_metrics(heldout, web, rows)
    write_json(args.metrics, metrics)
    log.info("%d rows (%s) from %d held-out pairs", metrics["rows"], metrics["by_kind"], len(heldout))


main = stage("prepare_dev", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
