"""metrics/report.md: the run's headline numbers as Markdown tables, from the metrics files the stages wrote.

Two tables shaped like the paper's: win rate of each model against the reference (with the judge's order
agreement, since a small judge can prefer a position rather than an answer), and the curation-quality table
(precision / recall of each curator's selection on the labelled dev set). Every metrics file read is one of the
report stage's dependencies in dvc.yaml, so a missing one is an error that names it, never a shorter report; a
key is looked up with a fallback only where its stage writes it conditionally.

"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from humpback.params import ROLES
from humpback.storage.records import atomic_path, read_json, read_jsonl, write_csv, write_json

DATA_STEPS = ("prepare_seed", "prepare_web", "sample_web", "prepare_eval", "prepare_dev", "augment")
CURATORS = ("base", "m0", "m1", "curator")


# The comparisons the report leads with (all in metrics/comparisons.json): the paper's central question first.
COMPARED = (("m2", "m0"), ("m1", "m0"), ("m2", "m1"))
# The headline's share of them: the final model against each predecessor, as difference and interval (n and
# M1 − M0 stay in comparisons.json and the report), so `dvc exp show` stays within 40 columns.
HEADLINE_COMPARED = ("m2_vs_m0", "m2_vs_m1")
HEADLINE_FIELDS = ("difference", "ci_low", "ci_high")
# The paired intervals are an instrument: they never move with the run's seeds.
COMPARISON_SEED = 0


def comparisons(likelihood: dict[str, dict], resamples: int) -> dict:
    """`comparisons.<a>_vs_<b>.<instrument>` = {difference a − b, ci_low, ci_high, n}, paired over questions."""
    from humpback.evaluation.likelihood import compare_models

    pairs = [(a, b) for a, b in COMPARED if a in likelihood and b in likelihood]
    return compare_models(likelihood, pairs, resamples, COMPARISON_SEED) if pairs else {}


def headline(
    evaluate: dict, curation: list[dict], data: dict[str, dict], likelihood: dict[str, dict], compared: dict
) -> dict:
    """The few numbers worth a column in `dvc exp show` (≤ 40, scalar leaves): each model's likelihood
    instruments, M2's paired comparisons (difference and interval), win rates, selection sizes, the curators'
    ROC-AUC (absent where curate.method is none: no method's figures at the top level)."""
    return {
        "likelihood": {
            name: {inst: round(r["mean"], 5) for inst, r in result["instruments"].items()}
            for name, result in likelihood.items()
        },
        "comparisons": {
            pair: {inst: {k: c[k] for k in HEADLINE_FIELDS} for inst, c in compared[pair].items()}
            for pair in HEADLINE_COMPARED
            if pair in compared
        },
        "win_rate": {name: m["win_rate"] for name, m in evaluate["models"].items()},
        "selected": {
            **{f"iteration_{name[-1]}": m["selected"] for name, m in data.items() if name.startswith("select@")},
            **({"shared": moved["shared"]} if (moved := data["select@2"].get("overlap_with_previous")) else {}),
        },
        "curator_roc_auc": {m["model"]: m.get("roc_auc") for m in curation if not m.get("skipped")},
    }


INSTRUMENT_WORDS = {
    "loglik_other": "other-source human answers (a source the pipeline never reads)",
    "loglik_seed": "held-out seed answers (the seed's own source)",
    "judged": "held-out in-domain questions (or the evaluation prompts), judged head to head",
}
UNITS = {"judged": "win-rate points above 50"}


def curator_agreement(scored_files: Sequence[str | Path]) -> dict | None:
    """How alike the two iterations' curators rank the same pairs: Spearman's rho between M0's and M1's scores
    (score@1, score@2) over the pairs both scored. Near 1, no level can make iteration 2 select much else."""
    if len(scored_files) != 2 or not all(Path(f).is_file() for f in scored_files):
        return None
    from scipy.stats import spearmanr

    first, second = ({r["id"]: r["score"] for r in read_jsonl(f) if r.get("score") is not None} for f in scored_files)
    shared = sorted(set(first) & set(second))
    if len(shared) < 3:
        return None
    rho = spearmanr([first[i] for i in shared], [second[i] for i in shared]).statistic
    return {"spearman": round(float(rho), 4), "n": len(shared)}


def iteration_2_words(moved: dict | None) -> list[str]:
    """Whether iteration 2 was a step at all: how much of M1's selection M2 shares, what an identical one means,
    and how alike the two curators rank the pairs (the reason a selection can hardly move)."""
    if not moved:
        return []
    if agreement := moved.get("rank_agreement"):
        return [
            *_selection_moved_words(moved)[:-1],
            (
                f"  M1 ranks the pairs as M0 did to Spearman's rho {agreement['spearman']:.3f} over "
                f"{agreement['n']} pairs (score@1 against score@2): the closer to 1, the less any level can "
                "change."
            ),
            "",
        ]
    return _selection_moved_words(moved)


def _selection_moved_words(moved: dict) -> list[str]:
    if moved["identical"]:
        return [
            (
                f"- **Iteration 2 changed nothing**: M1's re-rating selected exactly iteration 1's {moved['shared']} "
                "pairs, so M2 trained on M1's data and M2 − M1 measures only the training seed (with the same "
                "seed, M2 is M1). See `select.iteration_2` in docs/default-run.md."
            ),
            "",
        ]
    return [
        (
            f"- Iteration 2 moved the selection: {moved['shared']} pairs kept by both curators, "
            f"{moved['only_this']} new from M1's rating, {moved['only_previous']} of M0's dropped "
            f"(Jaccard {moved['jaccard']:.2f})."
        ),
        "",
    ]


def answers(compared: dict, moved: dict | None = None) -> list[str]:
    """The report's opening: does M2 beat M0, does M1, does M2 beat M1 — per instrument, with the interval and
    whether it tells; then whether iteration 2 changed the selection."""
    lines = ["## The answers", ""]
    if not compared:
        return lines + [
            "No likelihood instruments in this run: see the win rates below.",
            "",
            *iteration_2_words(moved),
        ]
    for pair, by_instrument in compared.items():
        a, b = (x.upper() for x in pair.split("_vs_"))
        for instrument in ("loglik_other", "judged", "loglik_seed"):
            c = by_instrument.get(instrument)
            if c is None:
                continue
            if c["ci_low"] > 0:
                verdict = f"**yes**: {a} is better, and the interval excludes no difference"
            elif c["ci_high"] < 0:
                verdict = f"**no, worse**: {a} is worse, and the interval excludes no difference"
            else:
                verdict = "**cannot tell**: the interval includes no difference"
            unit = UNITS.get(instrument, "nats/token")
            lines.append(
                f"- Does {a} beat {b} on {INSTRUMENT_WORDS.get(instrument, instrument)}? {verdict} "
                f"({c['difference']:+.4g} {unit} [{c['ci_low']:+.4g}, {c['ci_high']:+.4g}], "
                f"n = {c['n']}, bootstrap 95% over questions)."
            )
    return lines + [
        "",
        *iteration_2_words(moved),
        (
            "Mean per-token log-likelihood of human answers under each model's own template; a "
            "difference of +0.01 means the answers are about 1% likelier per token."
        ),
        "",
    ]


def write_report(
    metrics_dir: str | Path,
    out: str | Path,
    headline_out: str | Path,
    comparisons_out: str | Path,
    curation_plot: str | Path,
    curation_data: str | Path,
    likelihood_files: list[str] = (),
    resamples: int = 10000,
    html_out: str | Path | None = None,
    html_inputs: dict | None = None,
) -> None:
    """metrics/report.md, the headline metrics, every paired comparison (`comparisons_out`: {"<a>_vs_<b>":
    {instrument: {difference, ci_low, ci_high, n}}}) and the all-curators figure and CSV, from the stages' metrics
    and the likelihood stages' per-question values; with `html_out`, the same report to look at
    (humpback/evaluation/report_html.py; `html_inputs`: its files, the keyword arguments of
    `report_html.write_html`)."""
    from humpback.curation.quality import plot_curation_quality, table_rows

    root = Path(metrics_dir)
    data = {name: read_json(root / f"{name}.json") for name in DATA_STEPS}
    data.update({f"select@{i}": read_json(root / "select" / f"{i}.json") for i in (1, 2)})
    training = {role: read_json(root / "train" / f"{role}.json") for role in ROLES}
    curation = [read_json(root / "curation_quality" / f"{name}.json") for name in CURATORS]
    evaluate = read_json(root / "evaluate.json")
    likelihood = {r["model"]: r for r in (read_json(p) for p in likelihood_files)}
    compared = comparisons(likelihood, resamples)
    # judged: the in-domain questions head to head where the run has them (evaluate.json's indomain is {} without
    # them), else the evaluation prompts ({} with evaluate.head_to_head off)
    judged_source = (evaluate["indomain"] and evaluate["indomain"]["head_to_head"]) or evaluate["head_to_head"]
    for pair, judged in judged_source.items():
        if pair in {f"{a}_vs_{b}" for a, b in COMPARED}:
            compared.setdefault(pair, {})["judged"] = judged
    # select@1 has no previous selection to overlap
    moved = data["select@2"].get("overlap_with_previous")
    if moved and (agreement := curator_agreement((html_inputs or {}).get("scored_files") or [])):
        moved["rank_agreement"] = agreement
    text = render(evaluate, curation, data=data, training=training, compared=compared)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if html_out is not None:
        from humpback.evaluation.report_html import write_html

        write_html(html_out, text, compared, **(html_inputs or {}))
    curators = {m["model"]: m for m in curation if m.get("methods")}
    plot_curation_quality(curators, curation_plot, title="curation quality: every curator × method")
    write_csv(
        curation_data,
        ["curator", "method", "curator_method", "precision", "recall", "roc_auc"],
        [
            (r["curator"], r["method"], f"{r['curator']}/{r['method']}", r["precision"], r["recall"], r["roc_auc"])
            for r in table_rows(curators)
        ],
    )
    write_json(comparisons_out, compared)
    write_json(headline_out, headline(evaluate, curation, data, likelihood, compared))


def render(
    evaluate: dict[str, Any],
    curation: Sequence[dict[str, Any]],
    data: dict[str, dict[str, Any]],
    training: dict[str, dict[str, Any]],
    compared: dict,
) -> str:
    """metrics/report.md: the answers first, then one section per part of the method."""
    moved = data["select@2"].get("overlap_with_previous")
    return "\n".join(
        [
            "# humpback run report",
            "",
            *answers(compared, moved),
            *data_section(data),
            *training_section(training),
            *win_rate_section(evaluate),
            *curation_section(curation),
        ]
    )


def data_section(data: dict[str, dict[str, Any]]) -> list[str]:
    """What each data step read, kept and dropped. The steps write different counts (a selection has n and
    selected, no drops), hence the fallbacks."""
    lines = ["## Data", "", "| step | read | kept | dropped |", "|---|---|---|---|"]
    for name, m in data.items():
        dropped = ", ".join(f"{k} {v}" for k, v in m.get("dropped", {}).items() if v) or "none"
        read, kept = m.get("read", m.get("n", "n/a")), m.get("kept", m.get("selected", "n/a"))
        lines.append(f"| {name} | {read} | {kept} | {dropped} |")
    return [*lines, ""]


def training_section(training: dict[str, dict[str, Any]]) -> list[str]:
    """Each role's examples, steps, final loss, tokens and time."""
    lines = [
        "## Training",
        "",
        "| model | examples (seed + web) | steps | final loss | trained tokens | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for role, m in training.items():
        lines.append(
            f"| {role} | {m['examples']} ({m['examples_seed']} + {m['examples_augmented']}) | "
            f"{m['steps']} | {_num(m['final_loss'], 3)} | {m['trained_tokens']} | "
            f"{_num(m['seconds'], 0)} |"
        )
    return [*lines, ""]


def win_rate_section(evaluate: dict[str, Any]) -> list[str]:
    """evaluate.json: each model against the reference with the judge's order checks, the models head to head on
    the evaluation prompts, then the in-domain questions."""
    judge = evaluate["judge"]
    lines = [
        f"## Win rate against `{evaluate['reference']}`",
        "",
        f"Judge: {judge['kind']} `{judge['model']}` ({judge['annotator']}).",
        "",
        "| model | win rate (%) | ± s.e. | n | avg length | order agreement | position bias | unparsed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in evaluate["models"].items():
        lines.append(
            f"| {name} | {_num(m['win_rate'], 1)} | {_num(m['standard_error'], 1)} | {m['n']} | "
            f"{_num(m['avg_length'], 0)} | {_num(m['order_agreement'], 2)} | "
            f"{'yes' if m['position_bias'] else 'no'} | {m['unparsed']} |"
        )
    if evaluate["length_controlled_reason"]:
        lines += ["", f"Length-controlled win rate: not reported. {evaluate['length_controlled_reason']}"]
    lines += [
        "",
        *_head_to_head_table("The models head to head on the evaluation prompts", evaluate["head_to_head"]),
        *indomain_section(evaluate["indomain"]),
    ]
    return [*lines, ""]


def indomain_section(indomain: dict[str, Any]) -> list[str]:
    """The held-out in-domain questions against their human answers, and head to head ({}: the run has none)."""
    if not indomain:
        return []
    lines = [
        "## In-domain questions (held out of all training) against their human answers",
        "",
        "| model | win rate vs the human answer (%) | ± s.e. | n |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {_num(m['win_rate'], 1)} | {_num(m['standard_error'], 1)} | {m['n']} |"
        for name, m in indomain["models"].items()
    ]
    return [*lines, "", *_head_to_head_table("Head to head on the in-domain questions", indomain["head_to_head"])]


def curation_section(curation: Sequence[dict[str, Any]]) -> list[str]:
    """The curators on the labelled dev set at `curate.method` (the paper's table), then every method × curator.
    With curate.method none, a curator's file has no top-level figures: those cells read n/a."""
    curation = [m for m in curation if not m.get("skipped")]
    if not curation:
        return []
    from humpback.curation.quality import markdown_table

    lines = [
        "## Curation quality on the labelled dev set",
        "",
        "| curator | precision | recall | ROC-AUC [95% CI] | length-only AUC | selected | n | method |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in curation:
        ci = m.get("roc_auc_ci")
        lines.append(
            f"| {m['model']} | {_num(m.get('precision'), 2)} | {_num(m.get('recall'), 2)} | "
            f"{_num(m.get('roc_auc'), 2)}{f' [{ci[0]:.2f}, {ci[1]:.2f}]' if ci else ''} | "
            f"{_num(m.get('length_roc_auc'), 2)} | {m.get('n_selected')} | {m.get('n')} | "
            f"{m['method']} |"
        )
    lines += [
        "",
        ("The paper (250 labelled examples, selection = score 5): M0 0.44 / 0.09, M1 0.52 / 0.44, GPT-4 0.88 / 0.92."),
        "",
    ]
    with_methods = {m["model"]: m for m in curation if m["methods"]}
    if with_methods:
        lines += [
            "### Every method × curator",
            "",
            (
                "ROC-AUC: the chance that a good answer outscores a bad one (0.5 = chance; `length` is the "
                'baseline). Selection at each method\'s `curate.threshold`; "kept" columns: the share of each '
                "kind of bad answer that slips through. Bold: `curate.method`."
            ),
            "",
            *markdown_table(with_methods),
            "",
        ]
    return lines


def _head_to_head_table(title: str, pairs: dict) -> list[str]:
    if not pairs:
        return []
    lines = [f"### {title}", "", "| models | win rate − 50 | 95% interval | n |", "|---|---|---|---|"]
    lines += [
        f"| {pair.replace('_vs_', ' vs ')} | {c['difference']:+.1f} | [{c['ci_low']:+.1f}, {c['ci_high']:+.1f}] "
        f"| {c['n']} |"
        for pair, c in pairs.items()
    ]
    return [*lines, ""]


def _num(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
