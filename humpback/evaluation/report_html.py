"""metrics/report.html: the run's report to look at, in one self-contained file (figures inline as base64 PNG, no
script, a Content-Security-Policy that lets the page load nothing from anywhere).

It opens with a figure of the paired differences the answers are read from (every `comparisons.<a>_vs_<b>.
<instrument>` with its 95% interval), then the curation histograms, example pairs of each iteration (the highest-
and lowest-scored of those kept and of those dropped, with their scores and source segment), M0's and M2's answers
side by side, and the Markdown report's tables. Every piece of run text (web segments, instructions, answers) is
HTML-escaped: crawled pages reach this page, and none of their markup may run or load.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from humpback.storage.plotting import figure_png
from humpback.storage.records import atomic_path, iter_jsonl, read_json

SHORT_WORDS = {
    "loglik_other": "other-source answers",
    "loglik_seed": "held-out seed answers",
    "judged": "judged head to head",
}
UNITS = {"judged": "win-rate points above 50"}  # the rest: nats/token
EXAMPLES_PER_KIND = 2
SIDE_BY_SIDE = 4  # prompts shown with both models' answers
MAX_CHARS = 700  # of a segment or an answer on the page (the rest is counted)
STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#fafafa;color:#222}
main{max-width:1100px;margin:auto;padding:1em 2em 4em;background:#fff}
h1{margin-top:.3em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:13px}
table{border-collapse:collapse;margin:.6em 0;font-size:13px;width:100%}
th,td{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}th{background:#f1f3f5}
.kept{color:#1b7a3a;font-weight:600}.dropped{color:#b03030;font-weight:600}
.text{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px}
.more{color:#777;font-style:italic}.row{display:flex;gap:1em;flex-wrap:wrap}.row figure{flex:1;min-width:300px}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def comparison_figure(compared: dict[str, dict[str, dict]]) -> bytes | None:
    """Every paired difference with its 95% interval, one panel per unit; green/red where the interval excludes 0."""
    import matplotlib.pyplot as plt

    panels: dict[str, list[tuple[str, dict]]] = {}
    for pair, by_instrument in compared.items():
        a, b = (x.upper() for x in pair.split("_vs_"))
        for instrument, c in by_instrument.items():
            label = f"{a} − {b}: {SHORT_WORDS.get(instrument, instrument)} (n={c['n']})"
            panels.setdefault(UNITS.get(instrument, "nats/token"), []).append((label, c))
    if not panels:
        return None
    rows = max(len(v) for v in panels.values())
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.55 * rows + 1.4), squeeze=False)
    for ax, (unit, items) in zip(axes[0], panels.items()):
        for y, (_label, c) in enumerate(reversed(items)):
            color = "#1b7a3a" if c["ci_low"] > 0 else "#b03030" if c["ci_high"] < 0 else "#666666"
            ax.errorbar(
                c["difference"],
                y,
                xerr=[[c["difference"] - c["ci_low"]], [c["ci_high"] - c["difference"]]],
                fmt="o",
                color=color,
                capsize=4,
            )
        ax.axvline(0, color="#999999", linewidth=1, linestyle="--")
        ax.set_yticks(range(len(items)), [label for label, _ in reversed(items)], fontsize=8)
        ax.set_ylim(-0.6, len(items) - 0.4)
        ax.set_xlabel(unit, fontsize=9)
    fig.suptitle("Paired differences with 95% intervals (green: better, red: worse, grey: cannot tell)", fontsize=10)
    return figure_png(fig)


def example_pairs(
    scored: list[dict[str, Any]], selected: list[dict[str, Any]], per_kind: int = EXAMPLES_PER_KIND
) -> list[dict[str, Any]]:
    """The highest- and lowest-scored pairs among those kept and those dropped (each pair shown once)."""
    kept_ids = {str(r["id"]) for r in selected}

    def by_score(rows):  # unscored (unparsed) pairs rank lowest
        return sorted(rows, key=lambda r: (r.get("score") is not None, r.get("score") or 0.0), reverse=True)

    shown: set[str] = set()
    out = []
    for kept in (True, False):
        ranked = by_score([r for r in scored if (str(r["id"]) in kept_ids) == kept])
        for end, rows in (("highest", ranked[:per_kind]), ("lowest", ranked[::-1][:per_kind])):
            for r in rows:
                if str(r["id"]) not in shown:
                    shown.add(str(r["id"]))
                    out.append({**r, "kept": kept, "kind": f"{end}-scored {'kept' if kept else 'dropped'}"})
    return out


def side_by_side(a: list[dict[str, Any]], b: list[dict[str, Any]], n: int = SIDE_BY_SIDE) -> list[tuple[str, str, str]]:
    """(prompt, a's answer, b's answer) for the first `n` prompts both answered, matched by id (else by prompt)."""

    def key(r):
        return str(r.get("id", r["instruction"]))

    answers_b = {key(r): r["output"] for r in b}
    return [(r["instruction"], r["output"], answers_b[key(r)]) for r in a if key(r) in answers_b][:n]


def _text(value: Any, limit: int = MAX_CHARS) -> str:
    text = "" if value is None else str(value)
    more = f' <span class="more">… ({len(text) - limit} more characters)</span>' if len(text) > limit else ""
    return f'<div class="text">{html.escape(text[:limit])}{more}</div>'


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _examples_table(rows: list[dict[str, Any]]) -> str:
    body = "".join(
        f'<tr><td class="{"kept" if r["kept"] else "dropped"}">{html.escape(r["kind"])}</td>'
        f"<td>{_score(r.get('score'))}</td>"
        f"<td>{_text(r['instruction'], 300)}</td><td>{_text(r['output'])}"
        f'<div class="more">segment {html.escape(str(r.get("segment_id", "")))}</div></td></tr>'
        for r in rows
    )
    return (
        "<table><tr><th>which</th><th>score</th><th>instruction (backward model)</th>"
        f"<th>source segment (the answer)</th></tr>{body}</table>"
    )


def render_html(
    markdown: str,
    compared: dict,
    histograms: Sequence[tuple[str, bytes]],
    examples: dict[int, list[dict[str, Any]]],
    answers: tuple[str, str, list[tuple[str, str, str]]],
) -> str:
    """The page: the answers with their figure, the curation histograms, example pairs, answers side by side, then
    the Markdown report's remaining sections."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")  # raw HTML in the Markdown is shown, not run
    sections = re.split(r"(?m)^(?=## )", markdown)
    opening = next((s for s in sections if s.startswith("## The answers")), "")
    rest = [s for s in sections[1:] if s is not opening]
    parts = ["<h1>humpback run report</h1>", '<section id="answers">']
    figure = comparison_figure(compared)
    if figure:
        parts.append(
            f"<figure>{_img(figure, 'paired differences with 95% intervals')}<figcaption>Each model "
            "against another on the same questions: the difference and its bootstrap 95% interval."
            "</figcaption></figure>"
        )
    parts += [md.render(opening or "## The answers\n\nNo comparisons in this run."), "</section>"]
    if histograms:
        parts += [
            '<section id="curation"><h2>Curation scores</h2><div class="row">',
            *(
                f"<figure>{_img(png, title)}<figcaption>{html.escape(title)}</figcaption></figure>"
                for title, png in histograms
            ),
            "</div></section>",
        ]
    if examples:
        parts.append('<section id="examples"><h2>Example pairs</h2>')
        for iteration, rows in sorted(examples.items()):
            parts += [f"<h3>Iteration {iteration}</h3>", _examples_table(rows)]
        parts.append("</section>")
    name_a, name_b, rows = answers
    if rows:
        body = "".join(f"<tr><td>{_text(p, 400)}</td><td>{_text(x)}</td><td>{_text(y)}</td></tr>" for p, x, y in rows)
        a, b = html.escape(name_a.upper()), html.escape(name_b.upper())
        parts.append(
            f'<section id="side-by-side"><h2>{a} and {b} side by side</h2><table><tr><th>prompt</th>'
            f"<th>{a}</th><th>{b}</th></tr>{body}</table></section>"
        )
    parts += ['<section id="tables">', md.render("".join(rest)), "</section>"]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>humpback run report</title><style>{STYLE}</style></head>\n<body><main>\n"
        + "\n".join(parts)
        + "\n</main></body></html>\n"
    )


def write_html(
    out: str | Path,
    markdown: str,
    compared: dict,
    histogram_files: Sequence[str] = (),
    scored_files: Sequence[str] = (),
    selected_files: Sequence[str] = (),
    response_files: Sequence[str] = (),
) -> None:
    """Read the run's files (iteration N = the N-th scored/selected file; responses: the two models compared) and
    write the page atomically."""
    histograms = [
        (f"selection@{i}: scores of every pair", Path(p).read_bytes())
        for i, p in enumerate(histogram_files, start=1)
        if Path(p).is_file()
    ]
    examples = {
        i: example_pairs([r for _, r in iter_jsonl(scored)], [r for _, r in iter_jsonl(selected)])
        for i, (scored, selected) in enumerate(zip(scored_files, selected_files), start=1)
    }
    answers: tuple[str, str, list] = ("", "", [])
    if len(response_files) == 2:
        a, b = (read_json(p) for p in response_files)
        names = [
            (rows[0].get("generator") if rows else None) or Path(path).stem
            for rows, path in zip((a, b), response_files)
        ]
        answers = (names[0], names[1], side_by_side(a, b))
    with atomic_path(out) as tmp:
        tmp.write_text(render_html(markdown, compared, histograms, examples, answers), encoding="utf-8")
