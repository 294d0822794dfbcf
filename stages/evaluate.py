"""Stage evaluate: each model against the reference, judged by alpaca_eval's annotator in both output orders.

Writes the win rate (with standard error), n, mean output length, the judge's order agreement and position bias,
and unparsed counts per model (metrics), every annotation (both orders), a bar chart (PNG, and CSV for
`dvc plots`), and alpaca_eval's leaderboard row per model (one judgement per instruction in the annotator's
randomised order, read from the both-orders judgements) in the metrics and as CSV.
"""

from __future__ import annotations

import sys

from humpback.evaluation.head_to_head import run_evaluation
from humpback.stage_runner import stage


def arguments(parser) -> None:
    parser.add_argument("--responses", required=True, help="folder of model_outputs JSON (data/responses)")
    parser.add_argument("--prompts", required=True, help="the eval prompts (data/eval.jsonl), with any references")
    parser.add_argument("--indomain", help="in-domain questions with their human answers (data/seed_heldout.jsonl)")
    parser.add_argument("--indomain-responses", help="the models' answers to them (data/responses/indomain)")
    parser.add_argument("--models", nargs="+", required=True, help="respond items to evaluate (m0 m1 m2)")
    parser.add_argument("--judge-base", required=True, help="the judge when evaluate.judge_model is 'base'")
    parser.add_argument("--annotations", required=True, help="every annotation, both orders (JSON)")
    parser.add_argument("--metrics", required=True, help="metrics/evaluate.json")
    parser.add_argument("--plot", required=True, help="win-rate bar chart (PNG)")
    parser.add_argument("--plot-data", required=True, help="win rates as CSV (model, win_rate, standard_error)")
    parser.add_argument("--leaderboard", help="alpaca_eval's leaderboard row per model as CSV (its column names)")


def run(args, params) -> None:
    run_evaluation(
        params,
        args.responses,
        args.prompts,
        args.models,
        args.judge_base,
        args.annotations,
        args.metrics,
        args.plot,
        args.plot_data,
        leaderboard_out=args.leaderboard,
        indomain_file=args.indomain,
        indomain_dir=args.indomain_responses,
    )


main = stage("evaluate", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
