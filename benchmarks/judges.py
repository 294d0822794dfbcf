"""Which local judge to trust: each candidate judges the dev set's human answers against its bad answers.

    python benchmarks/judges.py --judge smollm2-135m=models/base --judge qwen-1.5b=models/qwen-1.5b \
        --reads pairwise pmi rubric_calibrated --dev data/dev.jsonl --out judges.json

Every bad answer in the labelled dev set (`prepare_dev`: mismatched, truncated, navigation, forum) is paired
with the human answer to the same question, and each judge model compares the two exactly as `evaluate` does,
in both orders, once per `evaluate.judge_read`:
- `pairwise`: alpaca_eval's weighted annotator read from one forward pass over both answers;
- a curation method (`pmi`, `rubric_calibrated`, ...): each answer scored alone, the higher score wins.
Every judge is built as `evaluate` builds it (`make_judge`: the engine `stage_settings(params, "evaluate")`
names, a method read with the judge's own settings, the judge's seed); a warm-up pair loads its engine before
the clock starts. Reported per judge and read: accuracy (the share of pairs, both orders averaged, where the
human answer wins: 100 = always right, 50 = chance), per bad-answer kind, the order agreement and position-bias
flag of `evaluate`, and seconds per judgement. `length` (the longer answer wins, no model) is the baseline to beat.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from humpback.curation.devset import NEGATIVE_KINDS
from humpback.curation.methods import writes_text
from humpback.engines.factory import stage_settings
from humpback.evaluation.head_to_head import JUDGE_SEED, evaluate_models
from humpback.evaluation.judges import make_judge
from humpback.params import DEFAULT_PARAMS_FILE, load_params
from humpback.storage.records import read_jsonl, write_json

# Judged once before the clock starts (it loads the judge's engine); in no dev set, so never cached for it.
WARM_UP = {"id": "warm-up", "instruction": "Say hello.", "output": "Hi there!", "generator": "warm-up"}


def judge_pairs(dev: list[dict]) -> dict[str, tuple[list[dict], list[dict]]]:
    """Per bad-answer kind: (human answers, bad answers) as alpaca_eval model_outputs, matched by instruction."""
    good = {r["instruction"]: r for r in dev if r["kind"] == "good"}
    pairs = {}
    for kind in NEGATIVE_KINDS:
        bad = [r for r in dev if r["kind"] == kind and r["instruction"] in good]
        human = [
            {
                "instruction": r["instruction"],
                "output": good[r["instruction"]]["output"],
                "id": r["id"],
                "generator": "human",
            }
            for r in bad
        ]
        pairs[kind] = (human, [{**r, "generator": kind} for r in bad])
    return pairs


def run_judge(judge_dir: str, read: str, pairs, params, judge_engine, max_chars: int) -> dict:
    """One judge model read one way over every kind of pair, with a fresh cache (every pair really judged).
    The judge is `evaluate`'s (`humpback.evaluation.judges.make_judge`); one warm-up pair, outside the timed part,
    loads its engine, so the seconds are those of judging."""
    settings = dataclasses.replace(params.evaluate, judge_read=read, judge_model="base")  # base = judge_dir
    per_kind, judgements = {}, 0
    with tempfile.TemporaryDirectory() as cache:
        annotator, _ = make_judge(settings, judge_engine, judge_dir, Path(cache), seed=JUDGE_SEED)
        evaluate_models(annotator, {"human": [dict(WARM_UP, output="Hello.")]}, [WARM_UP], max_chars)
        start = time.perf_counter()
        for kind, (human, bad) in pairs.items():
            models, rows = evaluate_models(annotator, {"human": human}, bad, max_chars)
            per_kind[kind] = models["human"]
            judgements += len(rows)
        seconds = time.perf_counter() - start
    rates = [m["win_rate"] for m in per_kind.values() if m["win_rate"] is not None]
    agreements = [m["order_agreement"] for m in per_kind.values() if m["order_agreement"] is not None]
    return {
        "accuracy": sum(rates) / len(rates) if rates else None,
        "accuracy_by_kind": {k: m["win_rate"] for k, m in per_kind.items()},
        "order_agreement": sum(agreements) / len(agreements) if agreements else None,
        "position_bias": any(m["position_bias"] for m in per_kind.values()),
        "unparsed": sum(m["unparsed"] for m in per_kind.values()),
        "judgements": judgements,
        "seconds_per_judgement": seconds / max(1, judgements),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", action="append", required=True, metavar="NAME=MODEL_DIR")
    ap.add_argument(
        "--reads",
        nargs="+",
        default=["pairwise", "pmi", "rubric_calibrated", "yes_no"],
        help="evaluate.judge_read values to try for every judge model",
    )
    ap.add_argument("--dev", default="data/dev.jsonl")
    ap.add_argument("--per-kind", type=int, default=0, help="bad answers per kind (0 = all in the dev set)")
    ap.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    pairs = judge_pairs(read_jsonl(args.dev))
    if args.per_kind:
        pairs = {k: (h[: args.per_kind], b[: args.per_kind]) for k, (h, b) in pairs.items()}
    max_chars = params.evaluate.max_chars
    # evaluate's engine settings; `auto` resolved for reads unless a read writes text (as evaluate resolves it)
    judge_engine = stage_settings(params, "evaluate", reads_only=not writes_text(args.reads))
    result = {
        "pairs_per_kind": {k: len(b) for k, (_, b) in pairs.items()},
        "max_chars": max_chars,
        "dtype": judge_engine.generation.dtype,
        "baseline_longer_wins": run_judge("", "length", pairs, params, judge_engine, max_chars),
        "judges": {},
    }
    for spec in args.judge:
        name, _, model_dir = spec.partition("=")
        if not model_dir:
            ap.error(f"--judge {spec!r}: expected NAME=MODEL_DIR")
        for read in args.reads:
            result["judges"][f"{name} {read}"] = run_judge(model_dir, read, pairs, params, judge_engine, max_chars)

    kinds = list(pairs)
    print(f"{'judge':<30}{'accuracy':>9}" + "".join(f"{k:>12}" for k in kinds) + f"{'agree':>7}{'s/judg':>8}")
    rows = [("longer answer wins", result["baseline_longer_wins"])] + list(result["judges"].items())

    def shown(value: float | None) -> float:  # a judge with no parsed verdict has no figure: nan, not a crash
        return float("nan") if value is None else value

    for name, r in rows:
        cells = "".join(f"{shown(r['accuracy_by_kind'].get(k)):>12.1f}" for k in kinds)
        print(
            f"{name:<30}{shown(r['accuracy']):>9.1f}{cells}{shown(r['order_agreement']):>7.2f}"
            f"{shown(r['seconds_per_judgement']):>8.2f}"
        )
    write_json(args.out, result)
    print(
        json.dumps(
            {
                n: {"accuracy": j["accuracy"], "seconds_per_judgement": j["seconds_per_judgement"]}
                for n, j in result["judges"].items()
            }
        )
    )


if __name__ == "__main__":
    main()
