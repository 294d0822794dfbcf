"""AlpacaEval-style head-to-head evaluation: each model against a reference, every pair judged in both orders.

alpaca_eval does the judging (`PairwiseAnnotator`, see evaluation/judges.py) and the win rate (`metrics.get_winrate`).
This module adds what a small judge needs watched: each pair is judged with the model's output first and with
it second; the two preferences are averaged (the reported win rate), and their agreement and the share of
wins by position show whether the judge reads the answers or just a position.

Preferences follow alpaca_eval: 1 = output_1 preferred, 2 = output_2 preferred, 1.5 = tie (floats in
between from the logprob parser). Here they are also turned to the model's side: 2 = the model wins.

Beside the both-orders figures, `leaderboard` gives alpaca_eval's own leaderboard row per model: its protocol
judges each instruction once, in the order its annotator's seeded randomisation picks, which is one of the two
orders judged here, so the row is read from the same judgements at no extra cost (docs/judges.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from humpback.statistics import bootstrap_mean_interval
from humpback.storage.records import read_json

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


# alpaca_eval's leaderboard columns, named and ordered as in its leaderboard CSVs (`mode` left out).
LEADERBOARD_COLUMNS = (
    "win_rate",
    "standard_error",
    "n_wins",
    "n_wins_base",
    "n_draws",
    "n_total",
    "discrete_win_rate",
    "avg_length",
    "length_controlled_winrate",
    "lc_standard_error",
)
# What alpaca_eval's length-controlled win rate is defined on: AlpacaEval 2's reference (the baseline its GLM's
# gamed rows in df_gamed.csv were judged against) and its 805 prompts in its own order (the GLM's per-instruction
# difficulty is looked up by position).
LC_REFERENCE = "gpt4_1106_preview"
ALPACA_EVAL_PROMPTS = 805
HUB_ID = "tatsu-lab/alpaca_eval"


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
    rows = [
        {
            "instruction": p["instruction"],
            "output": p["reference"],
            "generator": p.get("reference_generator", "reference"),
        }
        for p in prompts
        if "reference" in p
    ]
    if not rows:
        raise ValueError(
            "evaluate.reference is 'data' but data/eval.jsonl carries no reference outputs: set "
            "data.eval.reference (alpaca-eval: text_davinci_003 or gpt4_turbo)"
        )
    return rows


def load_outputs(path: str | Path) -> list[dict[str, Any]]:
    """An alpaca_eval model_outputs file: a JSON list of {"instruction", "output", "generator", ...}."""
    rows = read_json(path)
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and "instruction" in r and "output" in r for r in rows
    ):
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
        rows.append(
            {
                **common,
                "order": "reference_first",
                "output_1": theirs,
                "output_2": mine,
                "generator_1": ref_name,
                "generator_2": model,
            }
        )
        rows.append(
            {
                **common,
                "order": "model_first",
                "output_1": mine,
                "output_2": theirs,
                "generator_1": model,
                "generator_2": ref_name,
            }
        )
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
        result = {
            "win_rate": wr["win_rate"],
            "standard_error": wr["standard_error"],
            "discrete_win_rate": wr["discrete_win_rate"],
            "n_wins": wr["n_wins"],
            "n_wins_reference": wr["n_wins_base"],
            "n_draws": wr["n_draws"],
        }
    lengths = [len(str(o["output"])) for o in outputs]
    by_order = {}
    for order in ORDERS:
        sides = [
            row["model_preference"]
            for row in annotations
            if row["order"] == order and row["model_preference"] is not None
        ]
        by_order[order] = get_winrate([{"preference": p} for p in sides])["win_rate"] if sides else None
    return _plain(
        {
            **result,
            "n": len(combined),
            "avg_length": sum(lengths) / len(lengths) if lengths else None,
            **stats,
            "win_rate_by_order": by_order,
            "unparsed": sum(row["preference"] is None for row in annotations),
            "judgements": len(annotations),
            "length_controlled": None,
        }
    )


def evaluate_models(
    annotator, outputs: dict[str, Sequence[dict]], reference: Sequence[dict], max_chars: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Judge every model against the reference in one annotator call (one batch for a local judge)."""
    rows = [row for name, outs in outputs.items() for row in pair_rows(name, outs, reference, max_chars)]
    annotated = annotate(annotator, rows)
    models = {}
    for name, outs in outputs.items():
        mine = [row for row in annotated if row["model"] == name]
        models[name] = summarize_model(mine, outs)
        models[name]["missing_reference"] = len(outs) - len({row["pair"] for row in mine})
    return models, annotated


def head_to_head(
    annotator,
    outputs: dict[str, Sequence[dict]],
    max_chars: int,
    pairs: Sequence[tuple[str, str]] | None = None,
    resamples: int = 10000,
    seed: int = JUDGE_SEED,
) -> dict[str, dict[str, Any]]:
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
        low, high = bootstrap_mean_interval(wins, resamples, seed)
        out[f"{a}_vs_{b}"] = {
            "difference": round(100 * wins.mean() - 50, 3),
            "ci_low": round(100 * low - 50, 3),
            "ci_high": round(100 * high - 50, 3),
            "n": len(wins),
        }
    return out


def judge_indomain(
    annotator, answers: dict[str, Sequence[dict]], human: Sequence[dict], max_chars: int, versus: bool = True
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """In-domain questions never trained on: each model against the human answers (the reference, as AlpacaEval
    judges against text-davinci-003) and, with `versus`, the models head to head; (metrics, annotations)."""
    reference = [{"instruction": r["instruction"], "output": r["output"], "generator": "human"} for r in human]
    models, annotations = evaluate_models(annotator, answers, reference, max_chars)
    pairs = head_to_head(annotator, answers, max_chars, seed=JUDGE_SEED) if versus else {}
    return {"reference": "human answers (held-out seed pairs)", "models": models, "head_to_head": pairs}, annotations


def protocol_switches(instructions: Sequence[str], config: dict[str, Any], seed: int = JUDGE_SEED) -> list[bool]:
    """Which instructions alpaca_eval's annotator would show with the model's output first: its own
    `RandomSwitchTwoColumnsProcessor`, set up as `SinglePairwiseAnnotator` sets it up from the annotator's config
    (`is_randomize_output_order`, default on; `random_seed_column`, default the instruction) and the
    annotator's seed (alpaca_eval's default 0 = JUDGE_SEED), on rows in alpaca_eval's orientation (output_1 =
    the reference, as `annotate_head2head` puts it)."""
    import pandas as pd
    from alpaca_eval.processors import RandomSwitchTwoColumnsProcessor

    if not instructions or not config.get("is_randomize_output_order", True):
        return [False] * len(instructions)
    switch = "is_switched_outputs"  # the column name SinglePairwiseAnnotator gives it (its seed string starts so)
    processor = RandomSwitchTwoColumnsProcessor(
        two_columns_to_switch=["output_1", "output_2"],
        random_seed_columns=config.get("random_seed_column", ["instruction"]),
        _switch_column=switch,
        seed=seed,
    )
    df = pd.DataFrame({"instruction": list(instructions), "output_1": "", "output_2": ""})
    return [bool(v) for v in processor.preprocess(df)[switch]]


def leaderboard(
    annotations: Sequence[dict],
    outputs: dict[str, Sequence[dict]],
    reference: Sequence[dict],
    prompts: Sequence[dict],
    config: dict[str, Any] | None,
    annotator: str,
    max_chars: int,
) -> dict[str, Any]:
    """alpaca_eval's leaderboard row per model, on its protocol: one judgement per instruction, in the output
    order the annotator's seeded randomisation picks (`protocol_switches`). That judgement is one of the two this
    stage already made (same prompt, same judge), so the row costs no judging: it is read from `annotations`
    (evaluate_models' rows, both orders). `config` is alpaca_eval's config of the annotator in use (None for a
    method read, which has no annotator and no position to randomise). Columns and figures come from
    alpaca_eval's own `get_winrate` (and `get_length_controlled_winrate` where it is defined)."""
    from alpaca_eval.metrics import get_winrate

    by_model: dict[str, dict[str, dict[str, dict]]] = {}
    for row in annotations:
        by_model.setdefault(row["model"], {}).setdefault(row["pair"], {})[row["order"]] = row
    ref_generator = str(reference[0].get("generator", "reference")) if reference else "reference"
    rows = {}
    for name, outs in outputs.items():
        judged = by_model.get(name, {})
        keys = [str(o.get("id", i)) for i, o in enumerate(outs)]  # pair_rows' keys, in the outputs' order
        pairs = {k: judged[k] for k in keys if k in judged}
        instructions = [next(iter(p.values()))["instruction"] for p in pairs.values()]
        switched = protocol_switches(instructions, config or {"is_randomize_output_order": False})
        chosen = [p.get("model_first" if s else "reference_first") for p, s in zip(pairs.values(), switched)]
        # the model's side in alpaca_eval's orientation (output_2 = the model): 2 = the model wins; NaN = unparsed
        preferences = [
            math.nan if r is None or r["model_preference"] is None else r["model_preference"] for r in chosen
        ]
        row: dict[str, Any] = dict.fromkeys(LEADERBOARD_COLUMNS)
        if preferences:
            row.update(get_winrate([{"preference": p} for p in preferences]))
        lengths = [len(str(o["output"])) for o in outs]
        row["avg_length"] = int(sum(lengths) / len(lengths)) if lengths else None  # alpaca_eval's int of the mean
        cut = _cut_outputs(name, outs, reference, max_chars)
        reason = _length_controlled_reason(annotator, config, ref_generator, prompts, list(pairs), cut)
        if reason is None:
            row.update(_length_controlled(name, list(pairs), outs, reference, preferences, annotator, ref_generator))
        rows[name] = _plain(
            {**{k: row[k] for k in LEADERBOARD_COLUMNS}, "outputs_cut": cut, "length_controlled_reason": reason}
        )
    protocol = (
        f"alpaca_eval's: one judgement per instruction, in the order annotator {annotator}'s randomisation "
        f"(seed {JUDGE_SEED}) shows it"
        if config
        else "one judgement per instruction (a method read has no position to randomise)"
    )
    return {
        "protocol": protocol + "; read from the both-orders judgements, no extra judging",
        "annotator": annotator if config else None,
        "reference": ref_generator,
        "models": rows,
    }


def leaderboard_csv_rows(board: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of metrics/leaderboard.csv: alpaca_eval's leaderboard.csv layout (the model as an unnamed
    first column), so its rows can be read beside alpaca_eval's own (`pd.read_csv(..., index_col=0)`)."""
    rows = [[name, *("" if m[c] is None else m[c] for c in LEADERBOARD_COLUMNS)] for name, m in board["models"].items()]
    return ["", *LEADERBOARD_COLUMNS], rows


def _cut_outputs(model: str, outputs: Sequence[dict], reference: Sequence[dict], max_chars: int) -> int:
    """Judged pairs with an answer longer than `max_chars` (cut before judging: not alpaca_eval's protocol)."""
    by_instruction = {r["instruction"]: r for r in reference}
    return sum(
        1
        for o in outputs
        if o["instruction"] in by_instruction
        and max(len(str(o["output"])), len(str(by_instruction[o["instruction"]]["output"]))) > max_chars
    )


def _length_controlled_reason(
    annotator: str, config: dict | None, ref_generator: str, prompts: Sequence[dict], pairs: Sequence[str], cut: int
) -> str | None:
    """Why alpaca_eval's length-controlled win rate is not defined for this row, or None where it is."""
    from alpaca_eval import constants

    if config is None or annotator != constants.ANNOTATOR_CONFIG_AE2:
        judge = f"annotator {annotator}" if config else "a method read (no annotator)"
        return (
            f"defined for AlpacaEval 2's annotator {constants.ANNOTATOR_CONFIG_AE2} only (its GLM's gamed "
            f"rows were judged by it); this judge is {judge}"
        )
    if ref_generator != LC_REFERENCE:
        return f"defined against AlpacaEval 2's reference {LC_REFERENCE}; the reference here is {ref_generator}"
    order = [f"alpaca-eval/{i}" for i in range(ALPACA_EVAL_PROMPTS)]
    if [str(p.get("id")) for p in prompts] != order or list(pairs) != order:
        return (
            f"defined on all {ALPACA_EVAL_PROMPTS} AlpacaEval prompts in alpaca_eval's order (its GLM looks "
            f"each instruction's difficulty up by position); here {len(pairs)} prompts were judged"
        )
    if cut:
        return f"{cut} pairs had an answer cut to evaluate.max_chars before judging (alpaca_eval judges whole answers)"
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(
        try_to_load_from_cache(HUB_ID, "df_gamed.csv", cache_dir=constants.DEFAULT_CACHE_DIR, repo_type="dataset"), str
    ):
        return (
            f"its GLM needs df_gamed.csv of the {HUB_ID} dataset in the Hugging Face hub cache (not there: "
            f"`huggingface-cli download --repo-type dataset {HUB_ID} df_gamed.csv` fetches it)"
        )
    return None


def _length_controlled(
    model: str,
    pairs: Sequence[str],
    outputs: Sequence[dict],
    reference: Sequence[dict],
    preferences: Sequence[float],
    annotator: str,
    ref_generator: str,
) -> dict[str, float]:
    """alpaca_eval's `get_length_controlled_winrate` on the protocol's judgements, in alpaca_eval's annotation
    layout (row i = AlpacaEval prompt i; output_1 = the reference, whole); its GLM weights are not saved."""
    import pandas as pd
    from alpaca_eval.metrics import get_length_controlled_winrate

    by_instruction = {r["instruction"]: r for r in reference}
    by_id = {str(o.get("id")): o for o in outputs}
    df = pd.DataFrame(
        [
            {
                "instruction": by_id[p]["instruction"],
                "output_1": str(by_instruction[by_id[p]["instruction"]]["output"]),
                "output_2": str(by_id[p]["output"]),
                "generator_1": ref_generator,
                "generator_2": model,
                "annotator": annotator,
                "preference": pref,
            }
            for p, pref in zip(pairs, preferences)
        ]
    )
    lc = get_length_controlled_winrate(df, save_weights_dir=None, is_add_glm_preference_inplace=False)
    return {"length_controlled_winrate": lc["length_controlled_winrate"], "lc_standard_error": lc["lc_standard_error"]}


def plot_win_rates(models: dict[str, dict[str, Any]], reference: str, path: str | Path) -> None:
    """Bar chart: win rate against the reference per model, with ±1 standard error."""
    import matplotlib.pyplot as plt

    from humpback.storage.plotting import save_figure

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
    return f"alpaca_eval {settings.annotator}, both orders"


def evaluation_metrics(
    settings,
    judge: dict,
    models: dict,
    reference: list[dict],
    head_to_head: dict | None = None,
    indomain: dict | None = None,
    board: dict | None = None,
) -> dict:
    """metrics/evaluate.json: the reference, the judge, each model's win rate with its uncertainty, the models
    judged against each other (win rate − 50 with a bootstrap 95% interval over prompts), the same on the
    in-domain questions against their human answers, and alpaca_eval's leaderboard row per model (`leaderboard`)."""
    lengths = [len(str(r["output"])) for r in reference]
    return {
        "reference": settings.reference,
        "reference_avg_length": sum(lengths) / max(1, len(lengths)),
        "judge": {**judge, "annotator": annotator_description(settings), "max_chars": settings.max_chars},
        "length_controlled_reason": LENGTH_CONTROLLED_REASON,
        "models": models,
        "head_to_head": head_to_head or {},
        "indomain": indomain or {},
        **({"leaderboard": board} if board is not None else {}),
    }


def run_evaluation(
    params,
    responses_dir: str | Path,
    prompts_file: str | Path,
    models: Sequence[str],
    judge_base: str | Path,
    annotations_out: str | Path,
    metrics_out: str | Path,
    plot_out: str | Path,
    plot_data_out: str | Path,
    leaderboard_out: str | Path | None = None,
    indomain_file: str | Path | None = None,
    indomain_dir: str | Path | None = None,
) -> None:
    """The evaluate stage: each model against the reference in both orders, the models head to head, the
    in-domain questions against their human answers (with `indomain_file`), alpaca_eval's leaderboard row; writes
    the annotations, the metrics, the win-rate chart and its CSV, and the leaderboard CSV."""
    import logging
    import time

    from humpback.curation.methods import writes_text
    from humpback.engines.factory import stage_settings
    from humpback.evaluation.judges import annotator_config, make_judge
    from humpback.storage.records import iter_jsonl, write_csv, write_json

    settings = params.evaluate
    prompts = [r for _, r in iter_jsonl(prompts_file, required=("id", "instruction"))]
    reference = load_reference(settings.reference, responses_dir, prompts)
    outputs = {name: load_outputs(f"{responses_dir}/{name}.json") for name in models}
    reads_only = not writes_text([settings.judge_read])  # pairwise and method reads: no decoding
    judge_engine = stage_settings(params, "evaluate", reads_only)  # evaluate.engine, or generation.engine, resolved
    # the judge is an instrument: its own settings only (evaluate.*), never a condition under test (curate.*, train.*)
    annotator, judge = make_judge(settings, judge_engine, judge_base, seed=JUDGE_SEED)
    start = time.perf_counter()
    results, annotations = evaluate_models(annotator, outputs, reference, settings.max_chars)
    config = annotator_config(settings.annotator) if settings.judge_read == "pairwise" else None
    board = leaderboard(annotations, outputs, reference, prompts, config, settings.annotator, settings.max_chars)
    # the models against each other (evaluate.head_to_head: an API judge's other half of the calls)
    versus = head_to_head(annotator, outputs, settings.max_chars) if settings.head_to_head else {}
    indomain = None
    if indomain_file:  # the held-out seed questions, judged against their human answers, and head to head
        human = [r for _, r in iter_jsonl(indomain_file, required=("id", "instruction", "output"))]
        answers = {name: load_outputs(f"{indomain_dir}/{name}.json") for name in models}
        indomain, more = judge_indomain(annotator, answers, human, settings.max_chars, settings.head_to_head)
        annotations += more
    write_json(annotations_out, to_json_rows(annotations))
    write_json(metrics_out, evaluation_metrics(settings, judge, results, reference, versus, indomain, board))
    if leaderboard_out:
        write_csv(leaderboard_out, *leaderboard_csv_rows(board))
    plot_win_rates(results, settings.reference, plot_out)
    write_csv(
        plot_data_out,
        ["model", "win_rate", "standard_error"],
        [(name, m["win_rate"], m["standard_error"]) for name, m in results.items()],
    )
    logging.getLogger("evaluate").info(
        "judged %d annotations in %.1f s; win rates %s; head to head %s",
        len(annotations),
        time.perf_counter() - start,
        {n: m["win_rate"] for n, m in results.items()},
        _plain(versus),
    )
