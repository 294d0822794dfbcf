"""Stage respond: a model answers the evaluation prompts → alpaca_eval `model_outputs` JSON
(humpback/evaluation/responses.py)."""

from __future__ import annotations

import logging
import sys

from humpback.evaluation.responses import respond
from humpback.stage_runner import stage
from humpback.storage.records import iter_jsonl, write_json

log = logging.getLogger("respond")


def arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="model folder (models/<name>)")
    parser.add_argument("--name", required=True, help="generator name written into the outputs")
    parser.add_argument("--prompts", required=True, help="evaluation prompts (data/eval.jsonl)")
    parser.add_argument("--out", required=True, help="model_outputs JSON to write (data/responses/<name>.json)")
    parser.add_argument("--indomain", help="in-domain questions never trained on (data/seed_heldout.jsonl)")
    parser.add_argument("--indomain-out", help="their answers (data/responses/indomain/<name>.json)")


def run(args, params) -> None:
    from humpback.engines.factory import make_engine, stage_settings

    records = [r for _, r in iter_jsonl(args.prompts, required=("id", "instruction"))]
    engine = make_engine(args.model, stage_settings(params, "respond"))  # respond.engine, or generation.engine
    jobs = [(records, args.out)]
    if args.indomain:  # the same engine answers the in-domain questions (judged against their human answers)
        jobs.append(([r for _, r in iter_jsonl(args.indomain, required=("id", "instruction"))], args.indomain_out))
    for prompts, out in jobs:
        rows = respond(
            engine,
            prompts,
            args.name,
            params.respond.system_prompt,
            params.respond.max_new_tokens,
            params.seeds.generation,
        )
        write_json(out, rows)
        log.info(
            "%s: %d answers (%d empty), system prompt %s -> %s",
            args.name,
            len(rows),
            sum(not r["output"] for r in rows),
            params.respond.system_prompt,
            out,
        )


main = stage("respond", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
