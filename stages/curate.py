"""Stage curate: the curator rates every augmented pair; those at the method's threshold are selected.

The curator is the model being trained (`curate.model: self`, the paper: m0, then m1) or a named model that
prepare_curator converted into models/curator. Scores come from `humpback.scoring.score_pairs` by
`curate.method`, in resumable shards. Writes every pair with its score, the selection, metrics (score
histogram, parse-failure rate, lengths of all vs selected pairs) and a histogram (PNG, and CSV for `dvc plots`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from statistics import fmean

from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, load_params
from humpback.records import RecordError, iter_jsonl, write_csv, write_json, write_jsonl

log = logging.getLogger("curate")


def curator_for(params, own_model: str, named_folder: str | None) -> tuple[str, bool]:
    """(model folder, tagging) of the curator: the trained model itself with the system prompt it was trained
    with, or the prepared named model (never trained with the project's tags, so none)."""
    if params.curate.model == "self":
        return own_model, params.train.tagging
    if not named_folder:
        raise ValueError(f"curate.model is '{params.curate.model}' but no prepared curator folder was given")
    return named_folder, False


def curate(engine, pairs: list[dict], params, run, tagging: bool | None = None) -> list[dict]:
    """Every pair + {"score", "score_argmax", "probs", "raw", "parsed", "selected"}, in input order."""
    from humpback.scoring import is_selected, score_pairs

    tagging = params.train.tagging if tagging is None else tagging
    threshold = params.curate.threshold_for()

    def work(shard: list[dict]) -> list[dict]:
        scores = score_pairs(engine, shard, params.curate, tagging, params.base.seed)
        return [
            {**pair, "score": s.score, "score_argmax": s.argmax, "probs": s.probs, "raw": s.raw,
             "parsed": s.parsed, "selected": is_selected(s, threshold)}
            for pair, s in zip(shard, scores)
        ]

    return run.map(pairs, params.curate.shard_size, work, desc="curate")


def _lengths(rows: list[dict]) -> dict[str, float]:
    return {"instruction_chars": round(fmean(len(r["instruction"]) for r in rows), 1) if rows else 0.0,
            "output_chars": round(fmean(len(r["output"]) for r in rows), 1) if rows else 0.0}


def curate_metrics(scored: list[dict], params, seconds: float) -> dict:
    from humpback.scoring import RUBRIC_METHODS

    selected = [r for r in scored if r["selected"]]
    if params.curate.method in RUBRIC_METHODS:
        digits = Counter(r["score_argmax"] for r in scored if r["parsed"])
        histogram = {str(k): digits.get(k, 0) for k in range(1, 6)}
    else:
        histogram = dict(histogram_rows(scored, {"method": params.curate.method}))
    scores = [r["score"] for r in scored if r["parsed"]]
    return {
        "curator": params.curate.model,
        "method": params.curate.method,
        "threshold": params.curate.threshold_for(),
        "n": len(scored),
        "selected": len(selected),
        "selected_share": round(len(selected) / len(scored), 4) if scored else 0.0,
        # rubric methods: pairs per likeliest digit (forced reads) or parsed score (generate); other methods:
        # pairs per equal-width bin of the score, keyed by the bin's lower edge
        "histogram": histogram,
        "parse_failure_rate": round(1 - len(scores) / len(scored), 4) if scored else 0.0,
        "mean_score": round(fmean(scores), 4) if scores else None,  # on the method's scale (scoring.py)
        "lengths_all": _lengths(scored),
        "lengths_selected": _lengths(selected),
        "seconds": round(seconds, 2),
        "seconds_per_pair": round(seconds / len(scored), 3) if scored else None,
    }


def histogram_rows(scored: list[dict], metrics: dict, bins: int = 20) -> list[tuple[str, int]]:
    """(score, pairs) rows for `dvc plots`: the histogram curate_metrics recorded (digits 1..5 for the rubric
    methods), else `bins` equal-width bins of the continuous score, labelled by their lower edge."""
    if "histogram" in metrics:  # curate_metrics' histogram: digits, or these bins already computed
        return list(metrics["histogram"].items())
    values = [r["score"] for r in scored if r["parsed"]]
    if not values:
        return []
    low, width = min(values), (max(values) - min(values)) / bins or 1.0
    counts = Counter(min(int((v - low) / width), bins - 1) for v in values)
    return [(f"{low + b * width:.6g}", counts.get(b, 0)) for b in range(bins)]


def plot_histogram(scored: list[dict], metrics: dict, iteration: str, out: str | Path) -> None:
    """Rubric methods: bars of the integer scores; every method but generate: the continuous scores, with
    the threshold where it cuts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from humpback.records import atomic_path
    from humpback.scoring import RUBRIC_METHODS

    method = metrics["method"]
    panels = [p for p in ("digits", "continuous")
              if (p == "digits" and method in RUBRIC_METHODS) or (p == "continuous" and method != "generate")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "digits":
            ax.bar(range(1, 6), [metrics["histogram"][str(k)] for k in range(1, 6)], color="#4c72b0")
            ax.set_xlabel("parsed score" if method == "generate" else "likeliest score")
            ax.set_ylabel("pairs")
            continue
        values = [r["score"] for r in scored if r["parsed"]]
        bins = [1 + k / 8 for k in range(33)] if method == "logprob" else 30
        ax.hist(values, bins=bins, color="#4c72b0")
        ax.axvline(metrics["threshold"], color="#c44e52", linestyle="--", label="threshold")
        ax.set_xlabel(f"{method} score")
        ax.legend(fontsize=8)
    fig.suptitle(f"curate@{iteration}: {metrics['selected']}/{metrics['n']} selected at >= "
                 f"{metrics['threshold']}, {metrics['parse_failure_rate']:.0%} unparsed", fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iteration", required=True, help="curation iteration (1: curator m0, 2: m1)")
    parser.add_argument("--model", required=True, help="the model being trained (models/m0): the curator when "
                        "curate.model is self")
    parser.add_argument("--named-curator", help="the curator prepared from curate.model (models/curator)")
    parser.add_argument("--pairs", required=True, help="candidate pairs (data/augmented.jsonl)")
    parser.add_argument("--scored", required=True, help="every pair with its score (JSONL)")
    parser.add_argument("--selected", required=True, help="the selected pairs (JSONL)")
    parser.add_argument("--metrics", required=True, help="histogram, parse failures, lengths (JSON)")
    parser.add_argument("--plot", required=True, help="score histogram (PNG)")
    parser.add_argument("--plot-data", required=True, help="score histogram as CSV (score, pairs) for dvc plots")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    try:
        params = load_params(args.params)
        pairs = [r for _, r in iter_jsonl(args.pairs, required=("id", "instruction", "output"))]
    except (ParamsError, RecordError) as exc:
        print(f"curate: {exc}", file=sys.stderr)
        return 1

    from humpback.generation import make_engine
    from humpback.shards import ShardedRun, fingerprint

    stage = f"curate-{args.iteration}"
    sections = {"base.seed": params.base.seed, "train.tagging": params.train.tagging,
                "generation": dataclasses.asdict(params.generation),
                "curate": dataclasses.asdict(params.curate)}
    try:
        curator, tagging = curator_for(params, args.model, args.named_curator)
    except ValueError as exc:
        print(f"curate: {exc}", file=sys.stderr)
        return 1
    run = ShardedRun(stage, fingerprint(stage, sections, curator, [args.pairs]))
    engine = make_engine(curator, params.generation)
    start = time.perf_counter()
    scored = curate(engine, pairs, params, run, tagging=tagging)
    metrics = {"iteration": int(args.iteration) if args.iteration.isdigit() else args.iteration,
               **curate_metrics(scored, params, time.perf_counter() - start)}
    selected = [r for r in scored if r["selected"]]
    write_jsonl(args.scored, scored)
    write_jsonl(args.selected, selected)
    write_json(args.metrics, metrics)
    plot_histogram(scored, metrics, args.iteration, args.plot)
    write_csv(args.plot_data, ["score", "pairs"], histogram_rows(scored, metrics))
    run.clear()
    if not selected:
        log.warning("no pair reached curate.threshold.%s=%s: the next model trains on seed data only",
                    params.curate.method, params.curate.threshold_for())
    log.info("curate@%s: %d/%d selected, histogram %s, %.0f%% unparsed, %.1f s/pair -> %s", args.iteration,
             len(selected), len(scored), metrics["histogram"], 100 * metrics["parse_failure_rate"],
             metrics["seconds_per_pair"] or 0, args.selected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
