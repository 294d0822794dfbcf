"""Stage score@{1,2}: the curator rates every augmented pair (curate.method); nothing is selected here.

Iteration 1 is rated by m0, iteration 2 by m1 (`curate.model: self`, the paper), or both by the model
prepare_curator made (models/curator). Resumable shards (humpback/storage/shards.py); `curate.method: none` runs no
curator and writes the pairs unscored.
"""

from __future__ import annotations

import logging
import sys

from humpback.curation.curator import score_augmented
from humpback.stage_runner import stage
from humpback.storage.records import write_json, write_jsonl

log = logging.getLogger("score")


def arguments(parser) -> None:
    parser.add_argument("--iteration", type=int, required=True, choices=(1, 2))
    parser.add_argument("--model", required=True, help="the model being trained (models/m0): the self curator")
    parser.add_argument("--named-curator", required=True, help="the prepared curate.model (models/curator)")
    parser.add_argument("--pairs", required=True, help="candidate pairs (data/augmented.jsonl)")
    parser.add_argument("--out", required=True, help="every pair with its score (JSONL)")
    parser.add_argument("--metrics", required=True, help="parse failures, mean score, seconds (JSON)")


def run(args, params) -> None:
    scored, metrics, shards = score_augmented(args.iteration, args.model, args.named_curator, args.pairs, params)
    write_jsonl(args.out, scored)
    write_json(args.metrics, metrics)
    shards.clear()  # only once both outputs are written: a crash before resumes from the shards
    log.info(
        "score@%d: %d pairs by %s (%s), %s s/pair -> %s",
        args.iteration,
        len(scored),
        metrics["curator"],
        metrics["method"],
        metrics["seconds_per_pair"],
        args.out,
    )


main = stage("score", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
