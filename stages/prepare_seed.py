"""Stage prepare_seed: the seed source → training pairs, held-out pairs (never trained on), counts."""

from __future__ import annotations

import sys

from humpback.sources import prepare_seed
from humpback.stage_runner import stage
from humpback.storage.records import write_json, write_jsonl


def arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="training pairs (JSONL)")
    parser.add_argument("--heldout-out", required=True, help="held-out pairs: the dev set's and instruments' answers")
    parser.add_argument("--metrics", required=True)


def run(args, params) -> None:
    train, heldout, counts = prepare_seed(params.data.seed, params.seeds.sampling)
    metrics = counts.metrics()  # checks read = kept + Σ dropped before anything is written
    write_jsonl(args.out, train)
    write_jsonl(args.heldout_out, heldout)
    write_json(args.metrics, metrics)
    print(
        f"prepare_seed: {counts.source}: read {counts.read}, train {len(train)}, heldout {len(heldout)}, "
        f"dropped {metrics['dropped']}"
    )


main = stage("prepare_seed", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
