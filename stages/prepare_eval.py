"""Stage prepare_eval: the evaluation source → prompts (a category-balanced subset under a limit), counts."""

from __future__ import annotations

import sys

from humpback.sources import prepare_eval
from humpback.stage_runner import stage
from humpback.storage.records import write_json, write_jsonl


def arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="evaluation prompts (JSONL)")
    parser.add_argument("--metrics", required=True)


def run(args, params) -> None:
    prompts, counts = prepare_eval(params.data.eval)
    metrics = counts.metrics()  # checks read = kept + Σ dropped before anything is written
    write_jsonl(args.out, prompts)
    write_json(args.metrics, metrics)
    print(f"prepare_eval: {counts.source}: read {counts.read}, kept {counts.kept}, dropped {metrics['dropped']}")


main = stage("prepare_eval", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
