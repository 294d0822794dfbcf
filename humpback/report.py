"""metrics/report.md: the run's headline numbers as Markdown tables, from the metrics files the stages wrote.

Two tables shaped like the paper's: win rate of each model against the reference (with the judge's order
agreement, since a small judge can prefer a position rather than an answer), and the curation-quality table
(precision / recall of each curator's selection on the labelled dev set). Missing files are skipped.

The stage that writes it is `stages/report.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any



def render(
    evaluate: dict[str, Any] | None,
    curation: Sequence[dict[str, Any]],
    data: dict[str, dict[str, Any]] | None = None,
    training: dict[str, dict[str, Any]] | None = None,
) -> str:
    lines = ["# humpback run report", ""]
    if data:
        lines += ["## Data", "", "| step | read | kept | dropped |", "|---|---|---|---|"]
        for name, m in data.items():
            dropped = ", ".join(f"{k} {v}" for k, v in m.get("dropped", {}).items() if v) or "none"
            lines.append(f"| {name} | {m.get('read', m.get('n', 'n/a'))} | {m.get('kept', m.get('selected', 'n/a'))} | {dropped} |")
        lines.append("")
    if training:
        lines += ["## Training", "", "| model | examples (seed + web) | steps | final loss | trained tokens | seconds |",
                  "|---|---|---|---|---|---|"]
        for role, m in training.items():
            lines.append(
                f"| {role} | {m.get('examples')} ({m.get('examples_seed')} + {m.get('examples_augmented')}) | "
                f"{m.get('steps')} | {_num(m.get('final_loss'), 3)} | {m.get('trained_tokens')} | {_num(m.get('seconds'), 0)} |"
            )
        lines.append("")
    if evaluate:
        judge = evaluate.get("judge", {})
        lines += [
            f"## Win rate against `{evaluate.get('reference')}`",
            "",
            f"Judge: {judge.get('kind')} `{judge.get('model')}` ({judge.get('annotator', 'alpaca_eval')}).",
            "",
            "| model | win rate (%) | ± s.e. | n | avg length | order agreement | position bias | unparsed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, m in evaluate.get("models", {}).items():
            lines.append(
                f"| {name} | {_num(m.get('win_rate'), 1)} | {_num(m.get('standard_error'), 1)} | {m.get('n')} | "
                f"{_num(m.get('avg_length'), 0)} | {_num(m.get('order_agreement'), 2)} | "
                f"{'yes' if m.get('position_bias') else 'no'} | {m.get('unparsed')} |"
            )
        if evaluate.get("length_controlled_reason"):
            lines += ["", f"Length-controlled win rate: not reported. {evaluate['length_controlled_reason']}"]
        lines.append("")
    curation = [m for m in curation if not m.get("skipped")]
    if curation:
        from humpback.curation_quality import markdown_table

        lines += [
            "## Curation quality on the labelled dev set",
            "",
            "| curator | precision | recall | ROC-AUC [95% CI] | length-only AUC | selected | n | method |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for m in curation:
            ci = m.get("roc_auc_ci")
            lines.append(
                f"| {m.get('model')} | {_num(m.get('precision'), 2)} | {_num(m.get('recall'), 2)} | "
                f"{_num(m.get('roc_auc'), 2)}{f' [{ci[0]:.2f}, {ci[1]:.2f}]' if ci else ''} | "
                f"{_num(m.get('length_roc_auc'), 2)} | {m.get('n_selected')} | {m.get('n')} | {m.get('method', 'n/a')} |"
            )
        lines += ["", "The paper (250 labelled examples, selection = score 5): M0 0.44 / 0.09, M1 0.52 / 0.44, GPT-4 0.88 / 0.92.",
                  ""]
        with_methods = {m.get("model"): m for m in curation if m.get("methods")}
        if with_methods:
            lines += [
                "### Every method × curator",
                "",
                ("ROC-AUC: the chance that a good answer outscores a bad one (0.5 = chance; `length` is the "
                 "baseline). Selection at each method's `curate.threshold`; \"kept\" columns: the share of each "
                 "kind of bad answer that slips through. Bold: `curate.method`."),
                "",
                *markdown_table(with_methods),
                "",
            ]
    return "\n".join(lines)


def _num(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


