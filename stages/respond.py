"""Stage respond: a model answers the evaluation prompts → alpaca_eval `model_outputs` JSON.

Each prompt is the model's chat template with the inference-time system prompt of the paper's ablation
(`respond.system_prompt`: none | S_a | S_a+S_w). Sampling follows `generation`; every record gets its own
seed from (base.seed, record id), so an answer does not change when other prompts are added or removed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from humpback.generation import make_engine, record_seed
from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, load_params
from humpback.prompts import SystemPrompt, format_example, system_for_inference
from humpback.records import RecordError, iter_jsonl, write_json

log = logging.getLogger("respond")


def respond(engine, records: Sequence[dict[str, Any]], name: str, system_prompt: SystemPrompt,
            max_new_tokens: int, seed: int) -> list[dict[str, Any]]:
    """Answer every record; rows in alpaca_eval's model_outputs format (+ our id and category)."""
    system = system_for_inference(system_prompt)
    prompts = [format_example(engine.tokenizer, user=r["instruction"], system=system).prompt for r in records]
    seeds = [record_seed(seed, r["id"]) for r in records]
    answers = engine.generate(prompts, max_new_tokens, seeds, desc=f"respond {name}")
    return [
        {
            "instruction": r["instruction"],
            "output": answer.strip(),
            "generator": name,
            "dataset": r.get("dataset", ""),
            "id": r["id"],
            "category": r.get("category", ""),
        }
        for r, answer in zip(records, answers)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder (models/<name>)")
    parser.add_argument("--name", required=True, help="generator name written into the outputs")
    parser.add_argument("--prompts", required=True, help="evaluation prompts (data/eval.jsonl)")
    parser.add_argument("--out", required=True, help="model_outputs JSON to write (data/responses/<name>.json)")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    try:
        params = load_params(args.params)
        records = [r for _, r in iter_jsonl(args.prompts, required=("id", "instruction"))]
    except (ParamsError, RecordError) as exc:
        print(f"respond: {exc}", file=sys.stderr)
        return 1

    engine = make_engine(args.model, params.generation)
    rows = respond(engine, records, args.name, params.respond.system_prompt, params.respond.max_new_tokens,
                   params.base.seed)
    write_json(args.out, rows)
    empty = sum(not r["output"] for r in rows)
    log.info("%s: %d answers (%d empty) -> %s", args.name, len(rows), empty, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
