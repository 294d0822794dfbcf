"""Stage evaluate: each model against the reference, judged by alpaca_eval's annotator in both output orders.

Writes the win rate (with standard error), n, mean output length, the judge's order agreement and position bias,
and unparsed counts per model (metrics), every annotation (both orders), a bar chart (PNG, and CSV for
`dvc plots`), and alpaca_eval's leaderboard row per model (one judgement per instruction in the annotator's
randomised order, read from the both-orders judgements) in the metrics and as CSV.
"""

from __future__ import annotations

import logging
import sys
import time

from humpback.curation_methods import writes_text
from humpback.evaluation import (
    JUDGE_SEED,
    evaluate_models,
    evaluation_metrics,
    head_to_head,
    judge_indomain,
    leaderboard,
    leaderboard_csv_rows,
    load_outputs,
    load_reference,
    plot_win_rates,
    to_json_rows,
)
from humpback.generation import stage_settings
from humpback.judges import annotator_config, make_judge
from humpback.records import iter_jsonl, write_csv, write_json
from humpback.stage_runner import stage

log = logging.getLogger("evaluate")


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
    settings = params.evaluate
    prompts = [r for _, r in iter_jsonl(args.prompts, required=("id", "instruction"))]
    reference = load_reference(settings.reference, args.responses, prompts)
    outputs = {name: load_outputs(f"{args.responses}/{name}.json") for name in args.models}
    reads_only = not writes_text([settings.judge_read])  # pairwise and method reads: no decoding
    generation, runtime = stage_settings(params, "evaluate", reads_only)  # evaluate.engine, or generation.engine
    # the judge is an instrument: its own settings only (evaluate.*), never a condition under test (curate.*, train.*)
    annotator, judge = make_judge(settings, generation, args.judge_base, seed=JUDGE_SEED, runtime=runtime)
    start = time.perf_counter()
    models, annotations = evaluate_models(annotator, outputs, reference, settings.max_chars)
    config = annotator_config(settings.annotator) if settings.judge_read == "pairwise" else None
    board = leaderboard(annotations, outputs, reference, prompts, config, settings.annotator, settings.max_chars)
    # the models against each other (evaluate.head_to_head: an API judge's other half of the calls)
    versus = head_to_head(annotator, outputs, settings.max_chars) if settings.head_to_head else {}
    indomain = None
    if args.indomain:  # the held-out seed questions, judged against their human answers, and head to head
        human = [r for _, r in iter_jsonl(args.indomain, required=("id", "instruction", "output"))]
        answers = {name: load_outputs(f"{args.indomain_responses}/{name}.json") for name in args.models}
        indomain, more = judge_indomain(annotator, answers, human, settings.max_chars, settings.head_to_head)
        annotations += more
    write_json(args.annotations, to_json_rows(annotations))
    write_json(args.metrics, evaluation_metrics(settings, judge, models, reference, versus, indomain, board))
    if args.leaderboard:
        write_csv(args.leaderboard, *leaderboard_csv_rows(board))
    plot_win_rates(models, settings.reference, args.plot)
    write_csv(args.plot_data, ["model", "win_rate", "standard_error"],
              [(name, m["win_rate"], m["standard_error"]) for name, m in models.items()])
    log.info("judged %d annotations in %.1f s; win rates %s; head to head %s", len(annotations),
             time.perf_counter() - start, {n: m["win_rate"] for n, m in models.items()}, versus)


main = stage("evaluate", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
