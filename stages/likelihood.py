"""Stage likelihood: how likely one model finds held-out human answers → per-question values and means (JSON).

Two instruments: the held-out seed pairs (same source as the seed) and the other-source pairs (data.other).
Each question is prompted as the respond stage prompts it; see `humpback.likelihood`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace

from humpback.generation import make_engine
from humpback.likelihood import OTHER_SOURCE, SEED_HELDOUT, answer_likelihoods
from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, load_params
from humpback.records import RecordError, iter_jsonl, write_json

log = logging.getLogger("likelihood")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder (models/<name>)")
    parser.add_argument("--name", required=True, help="the model's name in the output")
    parser.add_argument("--heldout", required=True, help="held-out seed pairs (data/seed_heldout.jsonl)")
    parser.add_argument("--other", required=True, help="other-source pairs (data/other_heldout.jsonl)")
    parser.add_argument("--out", required=True, help="JSON to write (data/likelihood/<name>.json)")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    try:
        params = load_params(args.params)
        sets = {name: [r for _, r in iter_jsonl(path, required=("id", "instruction", "output"))]
                for name, path in ((SEED_HELDOUT, args.heldout), (OTHER_SOURCE, args.other))}
    except (ParamsError, RecordError) as exc:
        print(f"likelihood: {exc}", file=sys.stderr)
        return 1

    start = time.perf_counter()
    engine = make_engine(args.model, replace(params.generation, dtype=params.likelihood.dtype))
    instruments, seconds = {}, {}
    for name, pairs in sets.items():
        t = time.perf_counter()
        instruments[name] = answer_likelihoods(engine, pairs, params.respond.system_prompt,
                                               params.likelihood.max_chars, desc=f"{args.name} {name}")
        seconds[name] = round(time.perf_counter() - t, 2)
        log.info("%s %s: n %d, mean %.4f nats/token (%d tokens, %.1fs)", args.name, name,
                 instruments[name]["n"], instruments[name]["mean"], instruments[name]["tokens"], seconds[name])
    write_json(args.out, {
        "model": args.name,
        "system_prompt": params.respond.system_prompt,
        "max_chars": params.likelihood.max_chars,
        "dtype": params.likelihood.dtype,
        "seconds": {**seconds, "total": round(time.perf_counter() - start, 2)},
        "instruments": instruments,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
