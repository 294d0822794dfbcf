"""Which local judge to trust: each candidate judges the dev set's human answers against its bad answers.

    python benchmarks/judges.py --judge smollm2-135m=models/base --judge qwen-1.5b=models/qwen-1.5b \
        --dev data/dev.jsonl --out judges.json

Every bad answer in the labelled dev set (`prepare_dev`: mismatched, truncated, navigation, forum) is paired
with the human answer to the same question, and the judge compares the two exactly as `evaluate` does:
alpaca_eval's weighted annotator read from one forward pass (`humpback.judges`), in both orders. Reported per
judge: accuracy (the share of pairs, both orders averaged, where the human answer wins: 100 = always right,
50 = chance), per bad-answer kind, the order agreement and position-bias flag of `evaluate`, and seconds per
judgement. "longer answer wins" is the baseline a judge must beat (it needs no model).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from humpback.devset import NEGATIVE_KINDS
from humpback.evaluation import evaluate_models
from humpback.judges import LocalJudge, alpaca_eval_config, build_annotator
from humpback.params import DEFAULT_PARAMS_FILE, load_params
from humpback.records import read_jsonl, write_json


def judge_pairs(dev: list[dict]) -> dict[str, tuple[list[dict], list[dict]]]:
    """Per bad-answer kind: (human answers, bad answers) as alpaca_eval model_outputs, matched by instruction."""
    good = {r["instruction"]: r for r in dev if r["kind"] == "good"}
    pairs = {}
    for kind in NEGATIVE_KINDS:
        bad = [r for r in dev if r["kind"] == kind and r["instruction"] in good]
        human = [{"instruction": r["instruction"], "output": good[r["instruction"]]["output"], "id": r["id"],
                  "generator": "human"} for r in bad]
        pairs[kind] = (human, [{**r, "generator": kind} for r in bad])
    return pairs


def longer_wins(pairs: dict[str, tuple[list[dict], list[dict]]]) -> dict[str, float]:
    return {kind: 100 * sum(len(h["output"]) > len(b["output"]) for h, b in zip(human, bad)) / max(1, len(bad))
            for kind, (human, bad) in pairs.items()}


def run_judge(model_dir: str, pairs, params, max_chars: int) -> dict:
    config = alpaca_eval_config()
    candidates = list(dict.fromkeys(config["completion_parser_kwargs"]["denominator_tokens"]))
    judge = LocalJudge(Path(model_dir), params.generation, candidates)
    judge.engine  # load outside the timed part
    per_kind, judgements, start = {}, 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:  # a fresh cache: every pair is really judged
        for kind, (human, bad) in pairs.items():
            annotator = build_annotator(config, f"bench_{kind}", Path(cache) / kind, fn_completions=judge)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", action="append", required=True, metavar="NAME=MODEL_DIR")
    ap.add_argument("--dev", default="data/dev.jsonl")
    ap.add_argument("--per-kind", type=int, default=0, help="bad answers per kind (0 = all in the dev set)")
    ap.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    params = load_params(args.params)
    pairs = judge_pairs(read_jsonl(args.dev))
    if args.per_kind:
        pairs = {k: (h[: args.per_kind], b[: args.per_kind]) for k, (h, b) in pairs.items()}
    baseline = longer_wins(pairs)
    result = {"pairs_per_kind": {k: len(b) for k, (_, b) in pairs.items()},
              "max_chars": params.evaluate.max_chars,
              "baseline_longer_wins": {"accuracy": sum(baseline.values()) / len(baseline),
                                       "accuracy_by_kind": baseline},
              "judges": {}}
    for spec in args.judge:
        name, _, model_dir = spec.partition("=")
        result["judges"][name] = run_judge(model_dir, pairs, params, params.evaluate.max_chars)

    kinds = list(pairs)
    print(f"{'judge':<18}{'accuracy':>9}" + "".join(f"{k:>12}" for k in kinds) + f"{'agree':>7}{'s/judg':>8}")
    rows = [("longer wins", result["baseline_longer_wins"], None, None)]
    rows += [(n, j, j["order_agreement"], j["seconds_per_judgement"]) for n, j in result["judges"].items()]
    for name, r, agree, sec in rows:
        cells = "".join(f"{r['accuracy_by_kind'][k] if r['accuracy_by_kind'][k] is not None else float('nan'):>12.1f}"
                        for k in kinds)
        print(f"{name:<18}{r['accuracy']:>9.1f}{cells}" + (f"{agree:>7.2f}{sec:>8.2f}" if sec is not None else ""))
    write_json(args.out, result)
    print(json.dumps({n: {"accuracy": j["accuracy"], "seconds_per_judgement": j["seconds_per_judgement"]}
                      for n, j in result["judges"].items()}))


if __name__ == "__main__":
    main()
