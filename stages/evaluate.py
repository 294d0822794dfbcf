"""Stage evaluate: each model against the reference, judged by alpaca_eval's annotator in both output orders.

Writes the win rate (with standard error), n, mean output length, the judge's order agreement and position
bias, and unparsed counts per model (metrics), every annotation (both orders), and a bar chart (PNG, and CSV for `dvc plots`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from humpback.evaluation import (
    LENGTH_CONTROLLED_REASON,
    evaluate_models,
    load_outputs,
    plot_win_rates,
    reference_path,
    to_json_rows,
)
from humpback.judges import JudgeError, make_judge
from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, load_params
from humpback.records import write_csv, write_json

log = logging.getLogger("evaluate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", required=True, help="folder of model_outputs JSON (data/responses)")
    parser.add_argument("--models", nargs="+", required=True, help="respond items to evaluate (m0 m1 m2)")
    parser.add_argument("--judge-base", required=True, help="the judge when evaluate.judge_model is 'base'")
    parser.add_argument("--annotations", required=True, help="every annotation, both orders (JSON)")
    parser.add_argument("--metrics", required=True, help="metrics/evaluate.json")
    parser.add_argument("--plot", required=True, help="win-rate bar chart (PNG)")
    parser.add_argument("--plot-data", required=True, help="win rates as CSV (model, win_rate, standard_error)")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    try:
        params = load_params(args.params)
        settings = params.evaluate
        ref_file = reference_path(settings.reference, args.responses)
        reference = load_outputs(ref_file)
        outputs = {name: load_outputs(f"{args.responses}/{name}.json") for name in args.models}
        annotator, judge = make_judge(settings, params.generation, args.judge_base, seed=params.base.seed,
                                      curate=params.curate, tagging=params.train.tagging)
    except (ParamsError, JudgeError, ValueError, FileNotFoundError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 1

    start = time.perf_counter()
    models, annotations = evaluate_models(annotator, outputs, reference, settings.max_chars)
    seconds = time.perf_counter() - start
    reference_lengths = [len(str(r["output"])) for r in reference]
    write_json(args.annotations, to_json_rows(annotations))
    write_json(args.metrics, {
        "reference": settings.reference,
        "reference_avg_length": sum(reference_lengths) / max(1, len(reference_lengths)),
        "judge": {**judge, "annotator": _annotator(settings), "max_chars": settings.max_chars},
        "length_controlled_reason": LENGTH_CONTROLLED_REASON,
        "models": models,
    })
    plot_win_rates(models, settings.reference, args.plot)
    write_csv(args.plot_data, ["model", "win_rate", "standard_error"],
              [(name, m["win_rate"], m["standard_error"]) for name, m in models.items()])
    log.info("judged %d annotations in %.1f s", len(annotations), seconds)
    for name, m in models.items():
        log.info("%s vs %s: win rate %s ± %s (n=%d, agreement %s, unparsed %d)", name, settings.reference,
                 _fmt(m["win_rate"]), _fmt(m["standard_error"]), m["n"], _fmt(m["order_agreement"]), m["unparsed"])
    return 0


def _annotator(settings) -> str:
    if settings.judge == "local" and settings.judge_read != "pairwise":
        return f"each answer scored alone by curate method {settings.judge_read}, the higher wins; both orders"
    return "alpaca_eval weighted_alpaca_eval_gpt4_turbo, both orders"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    sys.exit(main())
