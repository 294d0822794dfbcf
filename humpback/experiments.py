"""Read a set of `dvc exp` runs as the paper's comparisons: one short table and one figure.

    python -m humpback.experiments --out sweeps/cap                 # the workspace's experiments, through DVC
    python -m humpback.experiments --rows docs/sweeps/cap.runs.json --out docs/sweeps/cap   # rows kept in a file

reads every experiment of the workspace through DVC's own API (`dvc.api.exp_show`), or exp_show-style rows from
a JSON file (`--rows`), takes one headline metric (by default the M2 other-source likelihood when the run has it,
else M2's win rate), and writes:
- `<out>.md`: per condition and x, the mean over the seeds that ran with its 95% t interval and n; the
  data-scaling fit metric = α·ln N + C per condition by least squares over every run, α with its t interval
  (n − 2 df) and, beside it, a bootstrap interval that resamples whole seeds within each N; and every run that
  was not read, with the reason;
- `<out>.png`: the metric against log N per condition, with the fitted lines.

A condition is every param that differs between the runs read, except x and the seeds (`seeds.*`): each such
key is a column, so runs that differ in anything but their seeds are never averaged together. x is the number of
augmented pairs M2 trained on (`selected.iteration_2` in the headline) unless `--x` names another key.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import typing
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

# Metrics in preference order: the judge-free other-source read first (it can tell models apart at 135M),
# then the judged win rate.
DEFAULT_METRICS = ("likelihood.m2.loglik_other", "win_rate.m2")
DEFAULT_X = "selected.iteration_2"
# The params that set an x key by design: a cap sweep moves the cap to move the pairs M2 trains on, so against
# that x the cap is the x itself, not a condition (and a cap-0 run sits at the count it selected).
X_SET_BY = {"selected.iteration_2": ("select.iteration_2.cap",)}
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


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """exp_show rows kept in a JSON file: a list of rows, or {"source": "...", "rows": [...]}."""
    data = json.loads(Path(path).read_text())
    return data["rows"] if isinstance(data, dict) else data


def _number(x: Any) -> float | None:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _value(run: Run, key: str) -> Any:
    return run.params[key] if key in run.params else run.metrics.get(key)


def pick_metric(runs: Sequence[Run], metric: str | None) -> str:
    if metric:
        return metric
    for name in DEFAULT_METRICS:
        if any(_number(r.metrics.get(name)) is not None for r in runs):
            return name
    raise ValueError(f"none of {DEFAULT_METRICS} in the experiments: pass --metric")


def t_multiplier(df: int) -> float:
    """The two-sided 95% Student t quantile."""
    return float(stats.t.ppf(0.975, df))


def mean_interval(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Mean and its 95% t interval (None with a single value)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, None, None
    half = t_multiplier(len(values) - 1) * float(stats.sem(values))
    return mean, mean - half, mean + half


def fit_log(points: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Least squares y = α·ln N + C over every run: α, C, n and α's 95% t interval on n − 2 df (None under 3
    runs, where the residuals leave no degree of freedom)."""
    xs = np.log([n for n, _ in points])
    if np.ptp(xs) == 0:
        raise ValueError("the fit needs at least two different N")
    fit = stats.linregress(xs, [y for _, y in points])
    ci = None
    if len(points) > 2:
        half = t_multiplier(len(points) - 2) * fit.stderr
        ci = (fit.slope - half, fit.slope + half)
    return {"alpha": float(fit.slope), "C": float(fit.intercept), "n": len(points), "alpha_ci": ci}


def _slope(xs: np.ndarray, ys: np.ndarray) -> float:
    dx = xs - xs.mean()
    return float(dx @ (ys - ys.mean()) / (dx @ dx))


def bootstrap_alpha(points: Sequence[tuple[float, Any, float]], resamples: int = BOOTSTRAP_RESAMPLES,
                    seed: int = 0) -> tuple[float, float] | None:
    """Percentile 95% interval of α from (N, seed, value) points, resampling whole seeds within each N: a seed's
    runs share its pool and curation, so a seed (not a run) is the replicate, and every resample keeps every N
    level. None where no N has two seeds (nothing to resample)."""
    levels: dict[float, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for n, seed_id, value in points:
        levels[n][seed_id].append(value)
    if len(levels) < 2 or all(len(seeds) < 2 for seeds in levels.values()):
        return None
    strata = [(math.log(n), [np.asarray(v) for v in seeds.values()]) for n, seeds in levels.items()]
    rng = np.random.default_rng(seed)
    alphas = np.empty(resamples)
    for i in range(resamples):
        xs, ys = [], []
        for log_n, groups in strata:
            for g in rng.integers(len(groups), size=len(groups)):
                ys.append(groups[g])
                xs.append(np.full(len(groups[g]), log_n))
        alphas[i] = _slope(np.concatenate(xs), np.concatenate(ys))
    low, high = np.percentile(alphas, [2.5, 97.5])
    return float(low), float(high)


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


def _cell(value: Any) -> str:
    number = _number(value)
    if number is not None and not isinstance(value, bool):
        return f"{number:g}"
    return "—" if value is None else str(value)


def _reason(run: Run, x: str, metric: str) -> str | None:
    """Why a run cannot be read (None: it can)."""
    if run.state and run.state.lower() not in ("success", "finished"):
        return f"state {run.state}"
    if _number(run.metrics.get(metric)) is None:
        raw = run.metrics.get(metric)
        return f"no {metric}" if raw is None else f"{metric} unreadable ({raw!r})"
    n = _number(_value(run, x))
    if n is None:
        return f"no {x}"
    if n <= 0:
        hint = f" (0 = all pairs: read it against {DEFAULT_X})" if x in X_SET_BY.get(DEFAULT_X, ()) else ""
        return f"{x} = {_cell(n)}: ln N needs N > 0{hint}"
    return None


def compare(rows: Sequence[dict[str, Any]] | Sequence[Run], x: str = DEFAULT_X, metric: str | None = None,
            by: Sequence[str] = ()) -> Readout:
    """Read the runs: conditions by every differing param (`by` first), means per x, the fit per condition."""
    runs = [r if isinstance(r, Run) else split_row(r) for r in rows]
    metric = pick_metric(runs, metric)
    read, not_read = [], []
    for run in runs:
        reason = _reason(run, x, metric)
        if reason:
            not_read.append((run.name, reason))
        else:
            read.append(run)
    folded = {x, *X_SET_BY.get(x, ())}
    names = sorted({k for r in read for k in r.params})

    def differs(key: str) -> bool:
        return len({json.dumps(r.params.get(key), sort_keys=True, default=str) for r in read}) > 1

    keys = list(by) + [k for k in names if k not in by and k not in folded and not k.startswith(SEED_PREFIX)
                       and differs(k)]
    seed_keys = [k for k in names if k.startswith(SEED_PREFIX) and differs(k)]
    groups: dict[tuple[str, ...], list[tuple[float, Any, float]]] = defaultdict(list)
    for run in read:
        condition = tuple(_cell(run.params.get(k)) for k in keys) or ("all",)
        seed_id = tuple(_cell(run.params.get(k)) for k in seed_keys)
        groups[condition].append((_number(_value(run, x)), seed_id, _number(run.metrics[metric])))
    conditions = {}
    for condition, points in sorted(groups.items()):
        by_x: dict[float, list[float]] = defaultdict(list)
        for n, _, value in points:
            by_x[n].append(value)
        result: dict[str, Any] = {"points": points,
                                  "by_x": {n: (*mean_interval(v), len(v)) for n, v in sorted(by_x.items())}}
        if len(by_x) > 1:
            result.update(fit_log([(n, v) for n, _, v in points]))
            result["alpha_boot"] = bootstrap_alpha(points)
        conditions[condition] = result
    return Readout(metric, x, keys, conditions,
                   {k: sorted({_cell(r.params.get(k)) for r in read}) for k in seed_keys}, not_read,
                   tuple(k for k in X_SET_BY.get(x, ()) if differs(k)))


def _interval(ci: tuple[float, float] | None, missing: str) -> str:
    if ci is None:
        return missing
    tells = " (excludes 0)" if ci[0] > 0 or ci[1] < 0 else " (includes 0: cannot tell)"
    return f"[{ci[0]:+.4g}, {ci[1]:+.4g}]{tells}"


def markdown(readout: Readout) -> str:
    r = readout
    head = [*(r.keys or ["condition"])]
    read = sum(len(c["points"]) for c in r.conditions.values())
    x_note = f" (set by {', '.join(f'`{k}`' for k in r.x_set_by)}: x, not a condition)" if r.x_set_by else ""
    condition_keys = ", ".join(f"`{k}`" for k in r.keys) if r.keys else "none, so one condition (all)"
    replicates = ("; ".join(f"`{k}` = {', '.join(v)}" for k, v in r.seeds.items()) if r.seeds
                  else "no seed key varies (one run per point)")
    summary = (f"{read} runs read, {len(r.not_read)} not read. x = `{r.x}`{x_note}. A condition is every param "
               f"that differs between the runs read except x and the seeds: {condition_keys}. Replicates: "
               f"{replicates}.")
    lines = [f"# {r.metric} against {r.x}", "", summary, "",
             f"| {' | '.join(head)} | {r.x} | mean | 95% t interval | runs |",
             "|" + "---|" * (len(head) + 4)]
    for condition, c in r.conditions.items():
        for n, (mean, lo, hi, k) in c["by_x"].items():
            interval = "n/a (one run)" if lo is None else f"[{lo:.5g}, {hi:.5g}]"
            lines.append(f"| {' | '.join(condition)} | {n:g} | {mean:.5g} | {interval} | {k} |")
    fit = (f"Fit {r.metric} = α·ln N + C by least squares over every run of a condition; α's t interval on n − 2 "
           f"df; beside it a bootstrap ({BOOTSTRAP_RESAMPLES} resamples of whole seeds within each N, so every N "
           "level stays):")
    lines += ["", fit, "",
              f"| {' | '.join(head)} | α | α 95% t interval | α 95% seed bootstrap | C | n | N levels |",
              "|" + "---|" * (len(head) + 6)]
    for condition, c in r.conditions.items():
        if "alpha" not in c:
            continue
        lines.append(f"| {' | '.join(condition)} | {c['alpha']:.4g} | "
                     f"{_interval(c['alpha_ci'], 'n/a (2 runs: no df left)')} | "
                     f"{_interval(c['alpha_boot'], 'n/a (one seed per N: nothing to resample)')} | "
                     f"{c['C']:.5g} | {c['n']} | {len(c['by_x'])} |")
    if r.not_read:
        lines += ["", "## Not read", "", "| run | reason |", "|---|---|"]
        lines += [f"| {name} | {reason} |" for name, reason in r.not_read]
    return "\n".join(lines) + "\n"


def plot(readout: Readout, out: str | Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    from humpback.plotting import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for condition, c in readout.conditions.items():
        label = ", ".join(f"{k}={v}" for k, v in zip(readout.keys, condition)) or "all"
        ns = list(c["by_x"])
        stats_ = list(c["by_x"].values())
        means = [s[0] for s in stats_]
        errs = [[m - (s[1] if s[1] is not None else m) for m, s in zip(means, stats_)],
                [(s[2] if s[2] is not None else m) - m for m, s in zip(means, stats_)]]
        line = ax.errorbar(ns, means, yerr=errs, marker="o", capsize=3, linestyle="none", label=label)
        if "alpha" in c:
            grid = [min(ns) * (max(ns) / min(ns)) ** (i / 50) for i in range(51)]
            ax.plot(grid, [c["alpha"] * math.log(n) + c["C"] for n in grid], color=line[0].get_color(),
                    label=f"{label}: α = {c['alpha']:.3g} (n = {c['n']})")
    ax.set_xscale("log")
    ticks: list[float] = []
    for n in sorted({n for c in readout.conditions.values() for n in c["by_x"]}):
        if not ticks or n > ticks[-1] * 1.25:  # labels of close N (32, 35) would overlap
            ticks.append(n)
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())  # N itself (4, 8, 35), not 4×10⁰
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set(xlabel=f"{readout.x} (log scale)", ylabel=readout.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--x", default=DEFAULT_X, help=f"the x axis: a param or headline key (default {DEFAULT_X}, "
                        "the pairs M2 trained on); a run whose x is missing or 0 is listed as not read")
    parser.add_argument("--by", action="append", default=[],
                        help="a param shown first among the condition columns (repeatable); every other param "
                        "that differs between the runs is a condition column too")
    parser.add_argument("--metric", help=f"headline metric (default: the first present of {DEFAULT_METRICS})")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--repo", help="the DVC repository (default: here)")
    source.add_argument("--rows", help="a JSON file of exp_show rows to read instead of asking DVC")
    parser.add_argument("--out", required=True, help="output prefix: writes <out>.md and <out>.png")
    args = parser.parse_args(argv)
    rows = without_workspace_copy(read_rows(args.rows) if args.rows else load(args.repo))
    try:
        readout = compare(rows, args.x, args.metric, args.by)
    except ValueError as exc:
        print(f"experiments: error: {exc}", file=sys.stderr)
        return 1
    text = markdown(readout)
    if not readout.conditions:
        print(text + f"experiments: error: no run has both {args.x} and {readout.metric}", file=sys.stderr)
        return 1
    Path(f"{args.out}.md").parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.md").write_text(text)
    plot(readout, f"{args.out}.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
