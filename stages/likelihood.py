"""Stage likelihood@{base,m0,m1,m2}: how likely one model finds held-out human answers
(humpback/evaluation/likelihood.py).

Two instruments: the held-out seed pairs (same source as the seed) and the other-source pairs (data.other), each
question prompted exactly as the respond stage prompts it (respond.system_prompt is the condition's, not the
instrument's: docs/instruments.md). Per-question values, so report can pair models.
"""

from __future__ import annotations

import sys

from humpback.evaluation.instrument_reads import read_instruments
from humpback.evaluation.likelihood import OTHER_SOURCE, SEED_HELDOUT
from humpback.stage_runner import stage
from humpback.storage.records import iter_jsonl, write_json


def arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="model folder (models/<name>)")
    parser.add_argument("--name", required=True, help="the model's name in the output")
    parser.add_argument("--heldout", required=True, help="held-out seed pairs (data/seed_heldout.jsonl)")
    parser.add_argument("--other", required=True, help="other-source pairs (data/other_heldout.jsonl)")
    parser.add_argument("--out", required=True, help="JSON to write (data/likelihood/<name>.json)")


def run(args, params) -> None:
    sets = {
        name: [r for _, r in iter_jsonl(path, required=("id", "instruction", "output"))]
        for name, path in ((SEED_HELDOUT, args.heldout), (OTHER_SOURCE, args.other))
    }
    write_json(args.out, read_instruments(args.model, args.name, sets, params))


main = stage("likelihood", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
