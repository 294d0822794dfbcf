"""Stage prepare_other: held-out human Q/A from a source never trained on, minus anything the run reads.

Checked against the seed pairs, the held-out seed pairs and the whole web pool (not its sample, so the set
never moves with the sample's size or seed).
"""

from __future__ import annotations

import itertools
import sys

from humpback.sources import prepare_other
from humpback.stage_runner import stage
from humpback.storage.records import iter_jsonl, write_json, write_jsonl


def arguments(parser) -> None:
    parser.add_argument("--training", nargs="+", required=True, help="what the run trains, curates or tunes on")
    parser.add_argument("--out", required=True, help="held-out pairs (JSONL: id, instruction, output, source)")
    parser.add_argument("--metrics", required=True)


def run(args, params) -> None:
    training = (row for _, row in itertools.chain.from_iterable(iter_jsonl(p) for p in args.training))
    pairs, counts = prepare_other(params.data.other, training)
    metrics = counts.metrics()  # checks read = kept + Σ dropped before anything is written
    write_jsonl(args.out, pairs)
    write_json(args.metrics, metrics)
    print(f"prepare_other: {counts.source}: read {counts.read}, kept {counts.kept}, dropped {metrics['dropped']}")


main = stage("prepare_other", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
