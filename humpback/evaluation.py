"""AlpacaEval-style head-to-head evaluation: each model against a reference, every pair judged in both orders.

alpaca_eval does the judging (`PairwiseAnnotator`, see judges.py) and the win rate (`metrics.get_winrate`).
This module adds what a small judge needs watched: each pair is judged with the model's output first and with
it second; the two preferences are averaged (the reported win rate), and their agreement and the share of
wins by position show whether the judge reads the answers or just a position.

Preferences follow alpaca_eval: 1 = output_1 preferred, 2 = output_2 preferred, 1.5 = tie (floats in
between from the logprob parser). Here they are also turned to the model's side: 2 = the model wins.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from humpback.records import read_json

# The judge is an instrument: its sampling seed never moves with the run's seeds.
JUDGE_SEED = 0
# The models judged against each other besides against the reference: the paper's central comparisons.
HEAD_TO_HEAD = (("m2", "m0"), ("m1", "m0"), ("m2", "m1"))
ORDERS = ("reference_first", "model_first")
# A judge is flagged as position-biased when it agrees with itself after a swap on fewer than this share of
# pairs, or when one position wins more than MAX_POSITION_SHARE of the (non-tied) judgements.
MIN_ORDER_AGREEMENT = 0.6
MAX_POSITION_SHARE = 0.75
LENGTH_CONTROLLED_REASON = (
    "AlpacaEval 2's length-controlled win rate fits a GLM that needs per-instruction difficulties of the 805 "
    "AlpacaEval prompts, downloaded from the Hugging Face hub (df_gamed.csv): not available offline, and "
    "undefined for other prompt sets."
)


# `evaluate.reference: data` judges against the reference outputs the eval source carried into data/eval.jsonl
# (`data.eval.reference`: AlpacaEval's text-davinci-003 or gpt4_turbo outputs, the paper's reference).
DATA_REFERENCE = "data"


def reference_path(reference: str, responses_dir: str | Path) -> Path:
    """`evaluate.reference`: a respond item ("base" → responses_dir/base.json) or a path to model_outputs JSON."""
    if reference.endswith(".json") or "/" in reference:
        return Path(reference)
    return Path(responses_dir) / f"{reference}.json"


def load_reference(reference: str, responses_dir: str | Path, prompts: Sequence[dict]) -> list[dict[str, Any]]:
    """The reference outputs: the eval rows' own (`data`), a respond item's, or a model_outputs file's."""
    if reference != DATA_REFERENCE:
        return load_outputs(reference_path(reference, responses_dir))
    rows = [{"instruction": p["instruction"], "output": p["reference"],
             "generator": p.get("reference_generator", "reference")} for p in prompts if "reference" in p]
    if not rows:
        raise ValueError("evaluate.reference is 'data' but data/eval.jsonl carries no reference outputs: set "
                         "data.eval.reference (alpaca-eval: text_davinci_003 or gpt4_turbo)")
    return rows


def load_outputs(path: str | Path) -> list[dict[str, Any]]:
    """An alpaca_eval model_outputs file: a JSON list of {"instruction", "output", "generator", ...}."""
    rows = read_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "instruction" in r and "output" in r
                                              for r in rows):
        raise ValueError(f"{path}: expected alpaca_eval model_outputs (a list of {{instruction, output, ...}})")
    return rows


def pair_rows(model: str, outputs: Sequence[dict], reference: Sequence[dict], max_chars: int) -> list[dict]:
    """Rows for the annotator: every instruction the model and the reference both answered, in both orders.

    Outputs are cut to `max_chars` characters first, so a small judge's context holds both answers.
    """
    by_instruction = {}
    for r in reference:
        by_instruction.setdefault(r["instruction"], r)
    rows = []
    for i, out in enumerate(outputs):
        ref = by_instruction.get(out["instruction"])
        if ref is None:
            continue
        mine, theirs = str(out["output"])[:max_chars], str(ref["output"])[:max_chars]
        ref_name = str(ref.get("generator", "reference"))
        common = {"instruction": out["instruction"], "model": model, "pair": str(out.get("id", i))}
        rows.append({**common, "order": "reference_first", "output_1": theirs, "output_2": mine,
                     "generator_1": ref_name, "generator_2": model})
        rows.append({**common, "order": "model_first", "output_1": mine, "output_2": theirs,
                     "generator_1": model, "generator_2": ref_name})
    return rows


def annotate(annotator, rows: Sequence[dict]) -> list[dict[str, Any]]:
    """Judge the rows with an alpaca_eval annotator; add `model_preference` (2 = the model wins, None = unparsed)."""
    annotated = annotator(list(rows)) if rows else []
    for row in annotated:
        row["preference"] = _preference(row.get("preference"))
        row["model_preference"] = model_side(row["preference"], row["order"])
    return annotated


def model_side(preference: float | None, order: str) -> float | None:
    """An alpaca_eval preference turned to the model's side: 2 = model preferred, whatever its position."""
    if preference is None:
        return None
    return preference if order == "reference_first" else 3.0 - preference


def order_stats(reference_first: Sequence[float | None], model_first: Sequence[float | None]) -> dict[str, Any]:
    """Consistency of a judge under swapping, from the raw alpaca_eval preferences of each pair in both orders.

    order_agreement: share of pairs (both orders parsed) whose winner is the same after the swap;
    first_position_win_share: share of non-tied judgements won by the answer shown first.
    """
    both = [(a, b) for a, b in zip(reference_first, model_first) if a is not None and b is not None]
    agree = [_side(model_side(a, "reference_first")) == _side(model_side(b, "model_first")) for a, b in both]
    decided = [p for p in [*reference_first, *model_first] if p is not None and p != 1.5]
    agreement = sum(agree) / len(agree) if agree else None
    first_share = sum(p < 1.5 for p in decided) / len(decided) if decided else None
    checks = []
    if agreement is not None:
        checks.append(agreement < MIN_ORDER_AGREEMENT)
    if first_share is not None:
        checks.append(max(first_share, 1 - first_share) > MAX_POSITION_SHARE)
    return {
        "order_agreement": agreement,
        "first_position_win_share": first_share,
        "position_bias": any(checks) if checks else None,
    }


def summarize_model(annotations: Sequence[dict], outputs: Sequence[dict]) -> dict[str, Any]:
    """Win rate (alpaca_eval's `get_winrate` on the per-pair mean of both orders), its standard error, n, mean
    output length, order statistics and the count of unparsed judgements, for one model's annotations."""
    from alpaca_eval.metrics import get_winrate

    by_pair: dict[str, dict[str, float | None]] = {}
    for row in annotations:
        by_pair.setdefault(row["pair"], {})[row["order"]] = row["preference"]
    pairs = list(by_pair.values())
    combined = []
    for prefs in pairs:
        sides = [model_side(p, order) for order, p in prefs.items() if p is not None]
        if sides:
            combined.append(sum(sides) / len(sides))
    stats = order_stats([p.get("reference_first") for p in pairs], [p.get("model_first") for p in pairs])
    result: dict[str, Any] = {"win_rate": None, "standard_error": None, "discrete_win_rate": None}
    if combined:
        wr = get_winrate([{"preference": p} for p in combined])
        result = {"win_rate": wr["win_rate"], "standard_error": wr["standard_error"],
                  "discrete_win_rate": wr["discrete_win_rate"], "n_wins": wr["n_wins"],
                  "n_wins_reference": wr["n_wins_base"], "n_draws": wr["n_draws"]}
    lengths = [len(str(o["output"])) for o in outputs]
    by_order = {}
    for order in ORDERS:
        sides = [row["model_preference"] for row in annotations
                 if row["order"] == order and row["model_preference"] is not None]
        by_order[order] = get_winrate([{"preference": p} for p in sides])["win_rate"] if sides else None
    return _plain({
        **result,
        "n": len(combined),
        "avg_length": sum(lengths) / len(lengths) if lengths else None,
        **stats,
        "win_rate_by_order": by_order,
        "unparsed": sum(row["preference"] is None for row in annotations),
        "judgements": len(annotations),
        "length_controlled": None,
    })


def evaluate_models(annotator, outputs: dict[str, Sequence[dict]], reference: Sequence[dict],
                    max_chars: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Judge every model against the reference in one annotator call (one batch for a local judge)."""
    rows = [row for name, outs in outputs.items() for row in pair_rows(name, outs, reference, max_chars)]
    annotated = annotate(annotator, rows)
    models = {}
    for name, outs in outputs.items():
        mine = [row for row in annotated if row["model"] == name]
        models[name] = summarize_model(mine, outs)
        models[name]["missing_reference"] = len(outs) - len({row["pair"] for row in mine})
    return models, annotated


def head_to_head(annotator, outputs: dict[str, Sequence[dict]], max_chars: int,
                 pairs: Sequence[tuple[str, str]] | None = None, resamples: int = 10000,
                 seed: int = JUDGE_SEED) -> dict[str, dict[str, Any]]:
    """Model a against model b on the same prompts, both orders, for every (a, b) in `pairs` (default: the
    HEAD_TO_HEAD pairs both of whose models answered):
    {"<a>_vs_<b>": {"difference": win rate of a − 50, "ci_low", "ci_high" (percentile bootstrap over prompts),
    "n"}}, in win-rate points, so 0 = no difference."""
    import numpy as np

    if pairs is None:
        pairs = [(a, b) for a, b in HEAD_TO_HEAD if a in outputs and b in outputs]
    out = {}
    for a, b in pairs:
        _, annotated = evaluate_models(annotator, {a: outputs[a]}, outputs[b], max_chars)
        by_pair: dict[str, list[float]] = {}
        for row in annotated:
            if row["model_preference"] is not None:
                by_pair.setdefault(row["pair"], []).append(row["model_preference"] - 1.0)  # 1 = a wins
        wins = np.array([sum(v) / len(v) for v in by_pair.values()], dtype=float)
        if not len(wins):
            continue
        rng = np.random.default_rng(seed)
        means = wins[rng.integers(0, len(wins), size=(resamples, len(wins)))].mean(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        out[f"{a}_vs_{b}"] = {"difference": round(100 * wins.mean() - 50, 3), "ci_low": round(100 * low - 50, 3),
                              "ci_high": round(100 * high - 50, 3), "n": len(wins)}
    return out


def judge_indomain(annotator, answers: dict[str, Sequence[dict]], human: Sequence[dict],
                   max_chars: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """In-domain questions never trained on: each model against the human answers (the reference, as AlpacaEval
    judges against text-davinci-003) and the models head to head; (metrics, annotations)."""
    reference = [{"instruction": r["instruction"], "output": r["output"], "generator": "human"} for r in human]
    models, annotations = evaluate_models(annotator, answers, reference, max_chars)
    return ({"reference": "human answers (held-out seed pairs)", "models": models,
             "head_to_head": head_to_head(annotator, answers, max_chars, seed=JUDGE_SEED)}, annotations)


def plot_win_rates(models: dict[str, dict[str, Any]], reference: str, path: str | Path) -> None:
    """Bar chart: win rate against the reference per model, with ±1 standard error."""
    import matplotlib.pyplot as plt

    from humpback.plotting import save_figure

    names = list(models)
    rates = [models[n]["win_rate"] if models[n]["win_rate"] is not None else 0.0 for n in names]
    errors = [models[n]["standard_error"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(names), 3.6))
    ax.bar(names, rates, yerr=errors, capsize=6, color="#4c72b0")
    ax.axhline(50, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(0, 100)
    ax.set_ylabel(f"win rate vs {reference} (%)")
    for i, n in enumerate(names):
        if models[n].get("position_bias"):
            ax.annotate("position bias", (i, 2), ha="center", fontsize=7, color="darkred")
    save_figure(fig, path, dpi=110)


def to_json_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Annotation rows as plain JSON values (alpaca_eval leaves NaN and numpy scalars in them)."""
    return json.loads(json.dumps([_plain(r) for r in rows], default=str))


def _preference(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _side(model_preference: float) -> int:
    return (model_preference > 1.5) - (model_preference < 1.5)


def _plain(obj: Any) -> Any:
    """numpy scalars → Python, NaN → None, recursively."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj




def annotator_description(settings) -> str:
    if settings.judge_read != "pairwise":
        return f"each answer scored alone by curate method {settings.judge_read}, the higher wins; both orders"
    return "alpaca_eval weighted_alpaca_eval_gpt4_turbo, both orders"


def evaluation_metrics(settings, judge: dict, models: dict, reference: list[dict],
                       head_to_head: dict | None = None, indomain: dict | None = None) -> dict:
    """metrics/evaluate.json: the reference, the judge, each model's win rate with its uncertainty, the models
    judged against each other (win rate − 50 with a bootstrap 95% interval over prompts), and the same on the
    in-domain questions against their human answers."""
    lengths = [len(str(r["output"])) for r in reference]
    return {
        "reference": settings.reference,
        "reference_avg_length": sum(lengths) / max(1, len(lengths)),
        "judge": {**judge, "annotator": annotator_description(settings), "max_chars": settings.max_chars},
        "length_controlled_reason": LENGTH_CONTROLLED_REASON,
        "models": models,
        "head_to_head": head_to_head or {},
        "indomain": indomain or {},
    }
