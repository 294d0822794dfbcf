"""Stage report: one readable page of the run (metrics/report.md) and its headline, from the stages' metrics."""

from __future__ import annotations

import sys

from humpback.evaluation.report import write_report
from humpback.stage_runner import stage


def arguments(parser) -> None:
    parser.add_argument("--metrics-dir", required=True, help="the metrics folder the stages wrote (metrics)")
    parser.add_argument("--out", required=True, help="the report (metrics/report.md)")
    parser.add_argument("--headline", required=True, help="the run's headline figures (metrics/headline.json)")
    parser.add_argument(
        "--comparisons",
        required=True,
        help="every paired comparison with its interval and n (metrics/comparisons.json)",
    )
    parser.add_argument("--curation-plot", required=True, help="every curator × method's ROC-AUC (PNG)")
    parser.add_argument("--curation-data", required=True, help="every curator × method's figures (CSV, dvc plots)")
    parser.add_argument("--likelihood", nargs="*", default=[], help="the likelihood stages' outputs, per model")
    parser.add_argument("--html", default=None, help="the report to look at, figures inline (metrics/report.html)")
    parser.add_argument("--scored", nargs="*", default=[], help="score@N's pairs, in iteration order (for --html)")
    parser.add_argument("--selected", nargs="*", default=[], help="select@N's pairs, in iteration order (for --html)")
    parser.add_argument("--histograms", nargs="*", default=[], help="select@N's score histograms (PNG, for --html)")
    parser.add_argument(
        "--responses",
        nargs="*",
        default=[],
        help="two models' answers to show side by side, e.g. M0's and M2's (for --html)",
    )


def run(args, params) -> None:
    write_report(
        args.metrics_dir,
        args.out,
        args.headline,
        args.comparisons,
        args.curation_plot,
        args.curation_data,
        args.likelihood,
        params.likelihood.bootstrap,
        html_out=args.html,
        html_inputs={
            "histogram_files": args.histograms,
            "scored_files": args.scored,
            "selected_files": args.selected,
            "response_files": args.responses,
        },
    )
    print(f"report: wrote {args.out}")


main = stage("report", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
