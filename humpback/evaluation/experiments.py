"""Read a set of `dvc exp` runs as the paper's comparisons: one short table and one figure.

    python -m humpback.evaluation.experiments --out sweeps/cap         # the workspace's experiments, through DVC
    python -m humpback.evaluation.experiments --rows docs/sweeps/cap.runs.json --out docs/sweeps/cap  # kept rows
    python -m humpback.evaluation.experiments --contrast curate.method=pmi --metrics paper --out sweeps/curated

reads every experiment of the workspace through DVC's own API (`dvc.api.exp_show`), or exp_show-style rows from
JSON files (`--rows`), takes one or more metrics (by default the M2 other-source likelihood when the run has it,
else M2's win rate; `a - b` is a difference of two keys per run; `--metrics paper` the paper's set), and writes:
- `<out>.md`, per metric: per condition and x, the mean over the seeds that ran with its 95% t interval and n; the
  data-scaling fit metric = α·ln N + C per condition by least squares over every run, α with its t interval
  (n − 2 df) and, beside it, a bootstrap interval that resamples whole seeds within each N; with `--contrast
  KEY=VALUE` (repeatable: a grid of two keys is read along each), every other arm's mean minus its reference
  arm's with a Welch 95% t interval and n per arm (with `--paired KEY`, seed by seed with a paired t interval:
  for arms that are the same trained models read two ways); and every run that was not read, with the reason;
- `<out>.png`: the (first) metric against log N per condition, with the fitted lines.
A write-up's own prose stays: what an existing `<out>.md` holds above the line READOUT_MARK is kept, and the
tables replace what is below it.

A condition is every param that differs between the runs read, except x and the seeds (`seeds.*`): each such
key is a column, so runs that differ in anything but their seeds are never averaged together. x is the number of
augmented pairs M2 trained on (`selected.iteration_2` in the headline) unless `--x` names another key. A contrast
pairs two conditions that differ only in the contrast key and in the pairs' count (SIZE_KEYS); an arm that
differs from every reference arm in anything else is listed as not contrasted, with the keys named.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import re
import sys
import typing
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from humpback.statistics import bootstrap_alpha, fit_log, mean_interval, paired, welch

# Metrics in preference order: the judge-free other-source read first (it can tell models apart at 135M),
# then the judged win rate.
DEFAULT_METRICS = ("likelihood.m2.loglik_other", "win_rate.m2")
DEFAULT_X = "selected.iteration_2"
# The params that set an x key by design: a cap sweep moves the cap to move the pairs M2 trains on, so against
# that x the cap is the x itself, not a condition (and a cap-0 run sits at the count it selected).
X_SET_BY = {"selected.iteration_2": ("select.iteration_2.cap",)}
# The params that set how many pairs the models train on, against x: a contrast may pair arms that differ in them
# besides the contrast key (the uncurated arm at all pairs against the curated one: quantity is the point, and
# the table shows each arm's N), never in anything else (a web pool, a threshold: a quality level, a method).
SIZE_KEYS = {
    "selected.iteration_2": (
        "select.iteration_1.cap",
        "select.iteration_1.top_share",
        "select.iteration_2.cap",
        "select.iteration_2.top_share",
    )
}
# A metric may be the difference of two keys of the same run: "a - b" (spaces around the minus).
DIFFERENCE = re.compile(r"\s+[-−]\s+")
# Named sets of metrics (label, spec): `paper` is what issue 31's write-ups report per arm. The headline carries
# M2 − M0 as a paired comparison over questions (its difference is the difference of the two means, unrounded);
# M1 − M0 only as each model's likelihood (rounded to 5 decimals), so it is read as a difference of two keys.
PRESETS = {
    "paper": (
        ("M1 − M0, other source", "likelihood.m1.loglik_other - likelihood.m0.loglik_other"),
        ("M2 − M0, other source", "comparisons.m2_vs_m0.loglik_other.difference"),
        ("M1 − M0, held-out seed", "likelihood.m1.loglik_seed - likelihood.m0.loglik_seed"),
        ("M2 − M0, held-out seed", "comparisons.m2_vs_m0.loglik_seed.difference"),
        ("M2 − M0, judged (win-rate points above 50)", "comparisons.m2_vs_m0.judged.difference"),
    )
}
# Every `seeds.*` key is a replicate, never a condition (per-role training seeds included).
SEED_PREFIX = "seeds."
# exp_show's bookkeeping columns: not a param or metric of the run.
ROW_META = ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")
BOOTSTRAP_RESAMPLES = 2000


@dataclasses.dataclass
class Run:
    """One exp_show row, its columns split into params (params.yaml) and metrics (everything else)."""

    name: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    state: str | None = None


@functools.cache
def is_param(key: str) -> bool:
    """Whether a bare exp_show column is a params.yaml key: a path of humpback/params.py's schema, or a key that
    schema records as moved (an older commit's run). `likelihood.m2.loglik_other` is a metric: `likelihood` is a
    params section too, but it has no `m2`."""
    from humpback.params import MOVED, Params

    if key in MOVED:
        return True
    cls: Any = Params
    for part in key.split("."):
        if not (dataclasses.is_dataclass(cls) and part in {f.name for f in dataclasses.fields(cls)}):
            return False
        cls = typing.get_type_hints(cls)[part]
    return True


def split_row(row: dict[str, Any]) -> Run:
    """exp_show names a column bare, or `file:name` where two files share the name: `params.yaml:...` is a param,
    any other file's a metric, a bare name is a param when `is_param` says so."""
    params, metrics = {}, {}
    for key, value in row.items():
        if key in ROW_META:
            continue
        source, _, name = key.rpartition(":")
        if source:
            (params if source.endswith("params.yaml") else metrics)[name] = value
        else:
            (params if is_param(name) else metrics)[name] = value
    experiment, rev = row.get("Experiment") or "", row.get("rev") or ""
    name = f"{experiment} ({rev})" if experiment and rev else experiment or rev or "?"
    return Run(name, params, metrics, row.get("State"))


def without_workspace_copy(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows, less the workspace row when it is the same run as a committed one: after `make repro` and a
    commit, exp_show lists that run twice (rev "workspace" and the branch), and counting both would weigh it
    double in means and fits. A workspace with changed params or metrics is a run of its own and stays."""

    def values(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k not in ROW_META}

    committed = [values(r) for r in rows if r.get("rev") != "workspace"]
    return [r for r in rows if r.get("rev") != "workspace" or values(r) not in committed]


def load(repo: str | None = None) -> list[dict[str, Any]]:
    """Every experiment (and the baseline) of the workspace's HEAD, as exp_show rows."""
    import dvc.api

    return dvc.api.exp_show(repo=repo, force=True)


def read_rows(*paths: str | Path) -> list[dict[str, Any]]:
    """exp_show rows kept in JSON files (a list of rows, or {"source": "...", "rows": [...]}), several files (one
    per queue run) read as one: a row kept twice (the baseline, listed by every exp_show) is counted once."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        rows += [r for r in (data["rows"] if isinstance(data, dict) else data) if r not in rows]
    return rows


def keep_rows(rows: Sequence[dict[str, Any]], path: str | Path, source: str) -> None:
    """The rows read, as a JSON file `--rows` reads back: a sweep's raw rows outlive its experiment refs."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"source": source, "rows": list(rows)}, indent=1, default=str) + "\n")


def _number(x: Any) -> float | None:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _value(run: Run, key: str) -> Any:
    return run.params[key] if key in run.params else run.metrics.get(key)


def metric_keys(metric: str) -> tuple[str, ...]:
    """The keys a metric reads: one, or two for a difference `a - b` (each run's a minus its own b)."""
    keys = tuple(DIFFERENCE.split(metric.strip()))
    if len(keys) > 2 or not all(keys) or any(" " in k for k in keys):
        raise ValueError(f"metric {metric!r}: a key, or the difference of two keys ('a - b')")
    return keys


def metric_value(run: Run, metric: str) -> float | None:
    values = [_number(run.metrics.get(k)) for k in metric_keys(metric)]
    if any(v is None for v in values):
        return None
    return values[0] - values[1] if len(values) == 2 else values[0]


def pick_metric(runs: Sequence[Run], metric: str | None) -> str:
    if metric:
        metric_keys(metric)
        return metric
    for name in DEFAULT_METRICS:
        if any(_number(r.metrics.get(name)) is not None for r in runs):
            return name
    raise ValueError(f"none of {DEFAULT_METRICS} in the experiments: pass --metric")


@dataclasses.dataclass
class Contrast:
    """Every arm whose `key` is not `value` against its reference arm (where `key` is `value`)."""

    key: str
    value: str  # as a table cell
    paired: bool = False  # arm and reference paired by seed (the same trained models read two ways), else Welch
    arms: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    not_contrasted: list[tuple[tuple[str, ...], float, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Readout:
    """A sweep read: the condition columns, per condition the points, means and fit, and the runs not read."""

    metric: str
    x: str
    keys: list[str]  # the condition columns: every differing param but x and the seeds (and --by first)
    conditions: dict[tuple[str, ...], dict[str, Any]]
    seeds: dict[str, list[str]]  # the seed keys that vary among the runs read, with their values
    not_read: list[tuple[str, str]]  # (run, reason)
    x_set_by: tuple[str, ...] = ()  # params folded into x (X_SET_BY) that differ between the runs
    label: str | None = None  # a preset's name for the metric
    contrasts: list[Contrast] = dataclasses.field(default_factory=list)  # one per --contrast, in order


def _cell(value: Any) -> str:
    number = _number(value)
    if number is not None and not isinstance(value, bool):
        return f"{number:g}"
    return "—" if value is None else str(value)


def _reason(run: Run, x: str, metric: str) -> str | None:
    """Why a run cannot be read (None: it can)."""
    if run.state and run.state.lower() not in ("success", "finished"):
        return f"state {run.state}"
    for key in metric_keys(metric):
        if _number(run.metrics.get(key)) is None:
            raw = run.metrics.get(key)
            return f"no {key}" if raw is None else f"{key} unreadable ({raw!r})"
    n = _number(_value(run, x))
    if n is None:
        return f"no {x}"
    if n <= 0:
        hint = f" (0 = all pairs: read it against {DEFAULT_X})" if x in X_SET_BY.get(DEFAULT_X, ()) else ""
        return f"{x} = {_cell(n)}: ln N needs N > 0{hint}"
    return None


def parse_contrast(text: str) -> tuple[str, str]:
    """`KEY=VALUE` as (key, the value as a table cell): the value is read as YAML, as `dvc exp run -S` reads it,
    so `top_share=1.0` names the arm whose cell is 1 and `train.tagging=true` the one whose cell is True."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--contrast {text!r}: KEY=VALUE, e.g. curate.method=pmi")
    return key.strip(), _cell(yaml.safe_load(value))


def compare_runs(
    rows: Sequence[dict[str, Any]] | Sequence[Run],
    x: str = DEFAULT_X,
    metric: str | None = None,
    by: Sequence[str] = (),
    contrasts: Sequence[tuple[str, str]] = (),
    label: str | None = None,
    paired_keys: Sequence[str] = (),
) -> Readout:
    """Read the runs: conditions by every differing param (`by` first), means per x, the fit per condition, and
    for each of `contrasts` (key, value) every other arm against the reference arms where that key has that value
    (two contrasts read a two-key grid along each key, the other held); a key in `paired_keys` is contrasted seed
    by seed (paired t), the others by Welch."""
    runs = [r if isinstance(r, Run) else split_row(r) for r in rows]
    metric = pick_metric(runs, metric)
    read, not_read = [], []
    first_with: dict[str, str] = {}  # params and x → the first run read with them
    for run in runs:
        reason = _reason(run, x, metric)
        if not reason:
            # Replicates differ in a seed: a run with every param the same (e.g. rerun to see the judge's noise) is
            # a repeat, and averaging it in would narrow the interval with no new seed behind it.
            same = first_with.setdefault(
                json.dumps([run.params, _value(run, x)], sort_keys=True, default=str), run.name
            )
            if same != run.name:
                reason = f"every param as {same}: a repeat, not a seed replicate (a replicate sets a seeds.* key)"
        if reason:
            not_read.append((run.name, reason))
        else:
            read.append(run)
    folded = {x, *X_SET_BY.get(x, ())}
    names = sorted({k for r in read for k in r.params})

    def differs(key: str, among: Sequence[Run] = read) -> bool:
        return len({json.dumps(r.params.get(key), sort_keys=True, default=str) for r in among}) > 1

    firsts = [key for key, _ in contrasts]
    if len(set(firsts)) < len(firsts):
        raise ValueError(f"--contrast: a key named twice ({', '.join(f'{k}={v}' for k, v in contrasts)})")
    for contrast in contrasts:
        _check_contrast(runs, contrast, folded, differs)
    unknown = set(paired_keys) - set(firsts)
    if unknown:
        raise ValueError(f"--paired {', '.join(sorted(unknown))}: not a --contrast key")
    by = [*firsts, *(k for k in by if k not in firsts)]
    keys = list(by) + [
        k for k in names if k not in by and k not in folded and not k.startswith(SEED_PREFIX) and differs(k)
    ]
    seed_keys = [k for k in names if k.startswith(SEED_PREFIX) and differs(k)]
    groups: dict[tuple[str, ...], list[tuple[float, Any, float]]] = defaultdict(list)
    for run in read:
        condition = tuple(_cell(run.params.get(k)) for k in keys) or ("all",)
        seed_id = tuple(_cell(run.params.get(k)) for k in seed_keys)
        groups[condition].append((_number(_value(run, x)), seed_id, metric_value(run, metric)))
    conditions = {}
    for condition, points in sorted(groups.items()):
        by_x: dict[float, list[float]] = defaultdict(list)
        for n, _, value in points:
            by_x[n].append(value)
        result: dict[str, Any] = {
            "points": points,
            "by_x": {n: (*mean_interval(v), len(v)) for n, v in sorted(by_x.items())},
        }
        if len(by_x) > 1 and len({v for _, _, v in points}) > 1:
            result.update(fit_log([(n, v) for n, _, v in points]))
            result["alpha_boot"] = bootstrap_alpha(points, BOOTSTRAP_RESAMPLES)
        elif len(by_x) > 1:
            # e.g. M1 − M0 in a sweep of iteration 2: the sweep never changes the models it reads, so there is
            # no slope to fit (least squares would report α = 0 with a NaN interval)
            result["unchanged"] = True
        conditions[condition] = result
    readout = Readout(
        metric,
        x,
        keys,
        conditions,
        {k: sorted({_cell(r.params.get(k)) for r in read}) for k in seed_keys},
        not_read,
        tuple(k for k in X_SET_BY.get(x, ()) if differs(k)),
        label,
    )
    readout.contrasts = [contrast_arms(readout, key, value, key in paired_keys) for key, value in contrasts]
    return readout


def _check_contrast(
    runs: Sequence[Run], contrast: tuple[str, str], folded: set[str], differs: typing.Callable[..., bool]
) -> None:
    """A contrast key is a condition (not x or a seed) that differs between the runs, one with that value."""
    key, value = contrast
    if key in folded or key.startswith(SEED_PREFIX):
        what = "a seed: a replicate" if key.startswith(SEED_PREFIX) else "x (or sets it)"
        raise ValueError(f"--contrast {key}: {what}, not a condition")
    if not differs(key, runs):
        raise ValueError(
            f"--contrast {key}: does not differ between the runs (every run has "
            f"{key} = {_cell(runs[0].params.get(key)) if runs else '—'})"
        )
    values = sorted({_cell(r.params.get(key)) for r in runs})
    if value not in values:
        raise ValueError(f"--contrast {key}={value}: no run has it ({key} is one of {', '.join(values)})")


def contrast_arms(readout: Readout, key: str, value: str, by_seed: bool = False) -> Contrast:
    """Every arm (a condition at one x) whose `key` is not the reference `value`, against the reference arm
    of its stratum: the same values of every other condition key but the SIZE_KEYS (those may differ: the
    uncurated arm at all pairs against the curated one), and the same N where either is read at several N (a
    scaling sweep, contrasted N by N). The closest match wins (the exact stratum first). An arm with no
    reference in its stratum is not contrasted, the keys that separate it named: its difference would mix the
    contrast with another change. `by_seed`: the difference is taken seed by seed over the seeds both arms ran
    (paired t), for arms that are the same trained models read two ways (an inference prompt)."""
    at = readout.keys.index(key)
    size = {*SIZE_KEYS.get(readout.x, ()), *X_SET_BY.get(readout.x, ())}
    arms = [
        (condition, n, {seed: v for m, seed, v in c["points"] if m == n}, len(c["by_x"]) > 1)
        for condition, c in readout.conditions.items()
        for n in c["by_x"]
    ]
    references = [arm for arm in arms if arm[0][at] == value]
    contrasts, not_contrasted = [], []
    for condition, n, values, several in arms:
        if condition[at] == value:
            continue
        matches, blocked = [], []
        for ref_condition, ref_n, ref_values, ref_several in references:
            other = [k for i, k in enumerate(readout.keys) if i != at and condition[i] != ref_condition[i]]
            apart = [
                f"`{k}` ({condition[readout.keys.index(k)]} vs {ref_condition[readout.keys.index(k)]})"
                for k in other
                if k not in size
            ]
            if (several or ref_several) and n != ref_n:
                apart.append(f"N ({n:g} vs {ref_n:g}: a condition read at several N is contrasted N by N)")
            if apart:
                blocked.append(f"from ({', '.join(ref_condition)}) at N = {ref_n:g} in {', '.join(apart)}")
            else:
                matches.append((len(other), ref_condition, ref_n, ref_values, other))
        if not matches:
            why = (
                f"no run read has {key} = {value}"
                if not references
                else f"it differs from every {key} = {value} arm in more than {key} and the pairs' count: "
                + "; ".join(blocked)
            )
            not_contrasted.append((condition, n, why))
            continue
        closest = min(m[0] for m in matches)
        for _, ref_condition, ref_n, ref_values, other in (m for m in matches if m[0] == closest):
            contrasts.append(
                {
                    "condition": condition,
                    "x": n,
                    "reference": ref_condition,
                    "x_ref": ref_n,
                    "also": other,
                    **(
                        paired([(values[s], ref_values[s]) for s in values if s in ref_values])
                        if by_seed
                        else welch(list(values.values()), list(ref_values.values()))
                    ),
                }
            )
    return Contrast(key, value, by_seed, contrasts, not_contrasted)


def _interval(ci: tuple[float, float] | None, missing: str) -> str:
    if ci is None:
        return missing
    tells = " (excludes 0)" if ci[0] > 0 or ci[1] < 0 else " (includes 0: cannot tell)"
    return f"[{ci[0]:+.4g}, {ci[1]:+.4g}]{tells}"


def markdown(readout: Readout, level: int = 1) -> str:
    """One metric's read: its arms (condition, x, mean, t interval, runs), the fit or why there is none, the
    contrasts, the runs not read; `level` is the heading's (2 when it is one section of several metrics)."""
    r = readout
    head = [*(r.keys or ["condition"])]
    read = sum(len(c["points"]) for c in r.conditions.values())
    x_note = f" (set by {', '.join(f'`{k}`' for k in r.x_set_by)}: x, not a condition)" if r.x_set_by else ""
    condition_keys = ", ".join(f"`{k}`" for k in r.keys) if r.keys else "none, so one condition (all)"
    replicates = (
        "; ".join(f"`{k}` = {', '.join(v)}" for k, v in r.seeds.items())
        if r.seeds
        else "no seed key varies (one run per point)"
    )
    summary = (
        f"{read} runs read, {len(r.not_read)} not read. x = `{r.x}`{x_note}. A condition is every param "
        f"that differs between the runs read except x and the seeds: {condition_keys}. Replicates: "
        f"{replicates}."
    )
    keys = metric_keys(r.metric)
    title = f"{r.label}: `{r.metric}`" if r.label else r.metric
    lines = [f"{'#' * level} {title} against {r.x}", ""]
    if len(keys) == 2:
        lines += [
            (
                f"The metric is the difference of two keys, `{keys[0]}` − `{keys[1]}`, taken per run (each "
                "run's own two values) and then averaged over the seeds."
            ),
            "",
        ]
    lines += [
        summary,
        "",
        f"| {' | '.join(head)} | {r.x} | mean | 95% t interval | runs |",
        "|" + "---|" * (len(head) + 4),
    ]
    for condition, c in r.conditions.items():
        for n, (mean, lo, hi, k) in c["by_x"].items():
            interval = "n/a (one run)" if lo is None else f"[{lo:.5g}, {hi:.5g}]"
            lines.append(f"| {' | '.join(condition)} | {n:g} | {mean:.5g} | {interval} | {k} |")
    fitted = [(condition, c) for condition, c in r.conditions.items() if "alpha" in c]
    if fitted:
        fit = (
            f"Fit {r.metric} = α·ln N + C by least squares over every run of a condition; α's t interval on "
            f"n − 2 df; beside it a bootstrap ({BOOTSTRAP_RESAMPLES} resamples of whole seeds within each N, so "
            "every N level stays):"
        )
        lines += [
            "",
            fit,
            "",
            f"| {' | '.join(head)} | α | α 95% t interval | α 95% seed bootstrap | C | n | N levels |",
            "|" + "---|" * (len(head) + 6),
        ]
        for condition, c in fitted:
            lines.append(
                f"| {' | '.join(condition)} | {c['alpha']:.4g} | "
                f"{_interval(c['alpha_ci'], 'n/a (2 runs: no df left)')} | "
                f"{_interval(c['alpha_boot'], 'n/a (one seed per N: nothing to resample)')} | "
                f"{c['C']:.5g} | {c['n']} | {len(c['by_x'])} |"
            )
    unchanged = [" | ".join(condition) for condition, c in r.conditions.items() if c.get("unchanged")]
    if unchanged:
        lines += [
            "",
            f"No fit for {', '.join(unchanged)}: the metric is the same in every run (nothing the sweep changes "
            + "moves it).",
        ]
    if not fitted and not unchanged and r.conditions:
        lines += ["", "No fit: one N per condition."]
    for contrast in r.contrasts:
        lines += _contrast_lines(r, contrast, head, level, named=len(r.contrasts) > 1)
    if r.not_read:
        lines += ["", f"{'#' * (level + 1)} Not read", "", "| run | reason |", "|---|---|"]
        lines += [f"| {name} | {reason} |" for name, reason in r.not_read]
    return "\n".join(lines) + "\n"


def _contrast_lines(r: Readout, contrast: Contrast, head: list[str], level: int, named: bool) -> list[str]:
    """One contrast's table; `named`: its "Not contrasted" heading names the reference (several in a read)."""
    key, value = contrast.key, contrast.value
    how, interval = (
        (
            (
                "arm − reference seed by seed over the seeds both ran (paired: the same trained models read two "
                "ways), its mean with a paired 95% t interval (seeds − 1 df; runs = seeds paired)"
            ),
            "paired 95% t interval",
        )
        if contrast.paired
        else (
            "each arm's mean minus its reference's, Welch 95% t interval (Welch–Satterthwaite df)",
            "Welch 95% t interval",
        )
    )
    text = (
        f"Contrasts with the reference arm `{key}` = {value}: {how}. The reference agrees with the arm on every "
        'other condition key but those that set the pairs\' count ("also differs in": arm vs reference) and, '
        "where either is read at several N, on N."
    )
    lines = [
        "",
        text,
        "",
        (
            f"| {' | '.join(head)} | {r.x} | reference {r.x} | also differs in | runs | reference runs | "
            f"arm − reference | {interval} | df |"
        ),
        "|" + "---|" * (len(head) + 8),
    ]
    for c in contrast.arms:
        also = (
            ", ".join(
                f"`{k}` ({c['condition'][r.keys.index(k)]} vs {c['reference'][r.keys.index(k)]})" for k in c["also"]
            )
            or "—"
        )
        df = "—" if c["df"] is None else f"{c['df']:.3g}"
        lines.append(
            f"| {' | '.join(c['condition'])} | {c['x']:g} | {c['x_ref']:g} | {also} | {c['n']} | "
            f"{c['n_ref']} | {c['difference']:+.4g} | {_interval(c['ci'], c['why'])} | {df} |"
        )
    if not contrast.arms:
        lines.append(f"| {' | '.join('—' for _ in head)} | — | — | — | — | — | — | none contrasted | — |")
    if contrast.not_contrasted:
        lines += [
            "",
            f"{'#' * (level + 1)} Not contrasted" + (f" with `{key}` = {value}" if named else ""),
            "",
            f"| {' | '.join(head)} | {r.x} | why |",
            "|" + "---|" * (len(head) + 2),
        ]
        lines += [f"| {' | '.join(condition)} | {n:g} | {why} |" for condition, n, why in contrast.not_contrasted]
    return lines


def markdown_all(readouts: Sequence[Readout]) -> str:
    """Several metrics of the same runs: one section each (arms, fit, contrasts, runs not read)."""
    if len(readouts) == 1:
        return markdown(readouts[0])
    r, names = readouts[0], ", ".join(f"`{m.metric}`" for m in readouts)
    versus = " and ".join(f"`{c.key}` = {c.value}" for c in r.contrasts)
    versus = f", contrasted with {versus}" if versus else ""
    return "\n".join(
        [
            f"# {len(readouts)} metrics against {r.x}{versus}",
            "",
            f"Each read the same way from the same rows: {names}.",
            "",
        ]
        + [markdown(m, 2) for m in readouts]
    )


def plot(readout: Readout, out: str | Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    from humpback.storage.plotting import save_figure

    labels = [", ".join(f"{k}={v}" for k, v in zip(readout.keys, condition)) for condition in readout.conditions]
    below = max(map(len, labels), default=0) > 40  # long condition labels would cover the points: list them below
    fig, ax = plt.subplots(figsize=(8, 4 + 0.25 * len(labels)) if below else (6, 4))
    sharing: dict[float, list[tuple[str, ...]]] = defaultdict(list)  # x → the conditions read there
    for condition, c in readout.conditions.items():
        for n in c["by_x"]:
            sharing[n].append(condition)
    for condition, c in readout.conditions.items():
        label = ", ".join(f"{k}={v}" for k, v in zip(readout.keys, condition)) or "all"
        ns = list(c["by_x"])
        # Conditions read at the same N (a mix or tagging grid: every arm at N = 25) are drawn side by side,
        # a few percent apart on the log axis, or their error bars would cover each other; the ticks stay at N.
        drawn = [n * DODGE ** (sharing[n].index(condition) - (len(sharing[n]) - 1) / 2) for n in ns]
        stats_ = list(c["by_x"].values())
        means = [s[0] for s in stats_]
        errs = [
            [m - (s[1] if s[1] is not None else m) for m, s in zip(means, stats_)],
            [(s[2] if s[2] is not None else m) - m for m, s in zip(means, stats_)],
        ]
        line = ax.errorbar(drawn, means, yerr=errs, marker="o", capsize=3, linestyle="none", label=label)
        if "alpha" in c:
            grid = [min(ns) * (max(ns) / min(ns)) ** (i / 50) for i in range(51)]
            ax.plot(
                grid,
                [c["alpha"] * math.log(n) + c["C"] for n in grid],
                color=line[0].get_color(),
                label=f"{label}: α = {c['alpha']:.3g} (n = {c['n']})",
            )
    ax.set_xscale("log")
    ticks: list[float] = []
    for n in sorted({n for c in readout.conditions.values() for n in c["by_x"]}):
        if not ticks or n > ticks[-1] * 1.25:  # labels of close N (32, 35) would overlap
            ticks.append(n)
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())  # N itself (4, 8, 35), not 4×10⁰
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set(xlabel=f"{readout.x} (log scale)", ylabel=readout.label or readout.metric)
    ax.grid(alpha=0.3)
    if below:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    else:
        ax.legend(fontsize=8)
    save_figure(fig, out)


# The step between conditions drawn at one N, as a factor on the log x axis.
DODGE = 1.04

READOUT_MARK = "<!-- the read-out: below this line, written by python -m humpback.evaluation.experiments -->"


def under_preface(tables: str, path: Path) -> str:
    """`tables` below what `path` already holds above READOUT_MARK (a write-up's prose, its commands), so reading
    the runs again never loses it; a file without the mark is replaced whole."""
    old = path.read_text() if path.exists() else ""
    preface, mark, _ = old.partition(READOUT_MARK)
    return f"{preface}{mark}\n\n{tables}" if mark else tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--x",
        default=DEFAULT_X,
        help=f"the x axis: a param or headline key (default {DEFAULT_X}, "
        "the pairs M2 trained on); a run whose x is missing or 0 is listed as not read",
    )
    parser.add_argument(
        "--by",
        action="append",
        default=[],
        help="a param shown first among the condition columns (repeatable); every other param "
        "that differs between the runs is a condition column too",
    )
    parser.add_argument(
        "--metric",
        action="append",
        default=[],
        help=f"a headline key, or the difference of two ('a - b', per run); repeatable, each read "
        f"the same way (default: the first present of {DEFAULT_METRICS})",
    )
    parser.add_argument(
        "--metrics",
        choices=sorted(PRESETS),
        help="a named set of metrics, read before any "
        "--metric: paper = M1 − M0 and M2 − M0 on both likelihood instruments, and judged M2 − M0",
    )
    parser.add_argument(
        "--contrast",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the reference arm (e.g. curate.method=pmi): every "
        "other arm's mean minus the reference's, with a Welch 95%% t interval; repeatable (a grid of two keys, "
        "e.g. train.tagging=true and respond.system_prompt=S_a, is read along each)",
    )
    parser.add_argument(
        "--paired",
        action="append",
        default=[],
        metavar="KEY",
        help="a --contrast key whose arms are the same trained models read two ways (e.g. "
        "respond.system_prompt): contrasted seed by seed with a paired t interval instead of Welch",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--repo", help="the DVC repository (default: here)")
    source.add_argument(
        "--rows",
        action="append",
        help="a JSON file of exp_show rows to read instead of asking "
        "DVC (repeatable: one file per queue run, read as one)",
    )
    parser.add_argument("--keep", help="also write the rows read to this JSON file (readable with --rows)")
    parser.add_argument(
        "--out", required=True, help="output prefix: writes <out>.md and <out>.png (the first metric's figure)"
    )
    args = parser.parse_args(argv)
    rows = without_workspace_copy(read_rows(*args.rows) if args.rows else load(args.repo))
    if args.keep:
        keep_rows(
            rows,
            args.keep,
            f"exp_show rows of {', '.join(args.rows or [args.repo or '.'])}, kept "
            f"{datetime.date.today()} by python -m humpback.evaluation.experiments",
        )
    metrics: list[tuple[str | None, str | None]] = [
        *PRESETS.get(args.metrics, ()),
        *((None, m) for m in args.metric),
    ] or [(None, None)]
    try:
        contrasts = [parse_contrast(text) for text in args.contrast]
        readouts = [
            compare_runs(rows, args.x, metric, args.by, contrasts, label, args.paired) for label, metric in metrics
        ]
    except ValueError as exc:
        print(f"experiments: error: {exc}", file=sys.stderr)
        return 1
    text = markdown_all(readouts)
    shown = [r for r in readouts if r.conditions]
    if not shown:
        names = " or ".join(r.metric for r in readouts)
        print(text + f"experiments: error: no run has both {args.x} and {names}", file=sys.stderr)
        return 1
    out_md = Path(f"{args.out}.md")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(under_preface(text, out_md))
    plot(shown[0], f"{args.out}.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
