"""Stage likelihood@{base,m0,m1,m2}: how likely one model finds held-out human answers
(humpback/evaluation/likelihood.py).

Two instruments: the held-out seed pairs (same source as the seed) and the other-source pairs (data.other), each
question prompted exactly as the respond stage prompts it (respond.system_prompt is the condition's, not the
instrument's: docs/instruments.md). Per-question values, so report can pair models.
"""

from __future__ import annotations

import logging
import sys
import time

from humpback.engines.base import EngineSettings
from humpback.engines.factory import engine_settings, make_engine
from humpback.evaluation.likelihood import OTHER_SOURCE, SEED_HELDOUT, answer_likelihoods
from humpback.params import GenerationParams, Params
from humpback.stage_runner import stage
from humpback.storage.records import iter_jsonl, write_json

log = logging.getLogger("likelihood")


def arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="model folder (models/<name>)")
    parser.add_argument("--name", required=True, help="the model's name in the output")
    parser.add_argument("--heldout", required=True, help="held-out seed pairs (data/seed_heldout.jsonl)")
    parser.add_argument("--other", required=True, help="other-source pairs (data/other_heldout.jsonl)")
    parser.add_argument("--out", required=True, help="JSON to write (data/likelihood/<name>.json)")


def instrument_settings(params: Params) -> EngineSettings:
    """The run's engine at the instruments' own precision (likelihood.dtype), resolved once; sampling plays no
    part."""
    generation = GenerationParams(
        engine=params.generation.engine,
        dtype=params.likelihood.dtype,
        temperature=1.0,
        top_p=1.0,
        api_model=params.generation.api_model,
    )
    return engine_settings(generation, params.runtime)


def run(args, params) -> None:
    sets = {
        name: [r for _, r in iter_jsonl(path, required=("id", "instruction", "output"))]
        for name, path in ((SEED_HELDOUT, args.heldout), (OTHER_SOURCE, args.other))
    }
    start = time.perf_counter()
    settings = instrument_settings(params)
    engine = make_engine(args.model, settings)
    instruments, seconds = {}, {}
    for name, pairs in sets.items():
        t = time.perf_counter()
        instruments[name] = answer_likelihoods(
            engine, pairs, params.respond.system_prompt, params.likelihood.max_chars, desc=f"{args.name} {name}"
        )
        seconds[name] = round(time.perf_counter() - t, 2)
        log.info(
            "%s %s: n %d, mean %.4f nats/token (%d tokens, %.1fs)",
            args.name,
            name,
            instruments[name]["n"],
            instruments[name]["mean"],
            instruments[name]["tokens"],
            seconds[name],
        )
    write_json(
        args.out,
        {
            "model": args.name,
            "system_prompt": params.respond.system_prompt,
            "max_chars": params.likelihood.max_chars,
            "dtype": params.likelihood.dtype,
            "engine": settings.generation.engine,
            "seconds": {**seconds, "total": round(time.perf_counter() - start, 2)},
            "instruments": instruments,
        },
    )


main = stage("likelihood", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
