"""Stage respond: a model answers the evaluation prompts → alpaca_eval `model_outputs` JSON (humpback/responses.py)."""

from __future__ import annotations

import logging
import sys

from humpback.records import iter_jsonl, write_json
from humpback.responses import respond
from humpback.stage_runner import stage

log = logging.getLogger("respond")


def arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="model folder (models/<name>)")
    parser.add_argument("--name", required=True, help="generator name written into the outputs")
    parser.add_argument("--prompts", required=True, help="evaluation prompts (data/eval.jsonl)")
    parser.add_argument("--out", required=True, help="model_outputs JSON to write (data/responses/<name>.json)")


def run(args, params) -> None:
    from humpback.generation import make_engine

    records = [r for _, r in iter_jsonl(args.prompts, required=("id", "instruction"))]
    engine = make_engine(args.model, params.generation, params.runtime)
    rows = respond(engine, records, args.name, params.respond.system_prompt, params.respond.max_new_tokens,
                   params.seeds.generation)
    write_json(args.out, rows)
    log.info("%s: %d answers (%d empty) -> %s", args.name, len(rows), sum(not r["output"] for r in rows), args.out)


main = stage("respond", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
