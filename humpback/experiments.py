"""Read a set of `dvc exp` runs as the paper's comparisons: one short table and one figure.

    python -m humpback.experiments --x select.iteration_2.cap --by curate.method --out docs/sweeps/cap

reads every experiment of the workspace through DVC's own API (`dvc.api.exp_show`), takes one headline metric
(by default the M2 other-source likelihood when the run has it, else M2's win rate), and writes:
- `<out>.md`: per condition (`--by`) and x value, the mean over the seeds that ran with its 95% interval and n;
  the data-scaling fit metric = α·log N + C per condition, with a bootstrap 95% interval for α;
- `<out>.png`: the metric against log N per condition, with the fitted lines.
The x axis is the number of augmented pairs M2 trained on (`selected.iteration_2` in the headline) unless
`--x` names a param.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

# Metrics in preference order: the judge-free other-source read first (it can tell models apart at 135M),
# then the judged win rate.
DEFAULT_METRICS = ("likelihood.m2.loglik_other", "win_rate.m2")
SEED_KEYS = ("seeds.sampling", "seeds.training", "seeds.generation")
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    """One `exp_show` row with its file prefixes dropped ("metrics/headline.json:win_rate.m2" → "win_rate.m2",
    "params.yaml:curate.method" → "curate.method")."""
    out = {}
    for key, value in row.items():
        name = key.split(":", 1)[1] if ":" in key else key
        out[name] = value
    return out


# exp_show's bookkeeping columns: not a param or metric of the run.
ROW_META = ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")


def without_workspace_copy(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows, less the workspace row when it is the same run as a committed one: after `make repro` and a
    commit, exp_show lists that run twice (rev "workspace" and the branch), and counting both would weigh it
    double in means and fits. A workspace with changed params or metrics is a run of its own and stays."""

    def values(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k not in ROW_META}

    committed = [values(r) for r in rows if r.get("rev") != "workspace"]
    return [r for r in rows if r.get("rev") != "workspace" or values(r) not in committed]


def load(repo: str | None = None) -> list[dict[str, Any]]:
    """Every experiment (and the baseline) of the workspace's HEAD, as flat rows, each run once."""
    import dvc.api

    return without_workspace_copy([normalise(r) for r in dvc.api.exp_show(repo=repo, force=True)])


def pick_metric(rows: Sequence[dict[str, Any]], metric: str | None) -> str:
    if metric:
        return metric
    for name in DEFAULT_METRICS:
        if any(_number(r.get(name)) is not None for r in rows):
            return name
    raise ValueError(f"none of {DEFAULT_METRICS} in the experiments: pass --metric")


def _number(x: Any) -> float | None:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def mean_interval(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Mean and its 95% t-interval (None with a single value)."""
    mean = fmean(values)
    if len(values) < 2:
        return mean, None, None
    half = T_95.get(len(values) - 1, 1.96) * stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def fit_log(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least squares y = α·ln N + C; (α, C)."""
    xs = [math.log(n) for n, _ in points]
    ys = [y for _, y in points]
    mx, my = fmean(xs), fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("the fit needs at least two different N")
    alpha = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return alpha, my - alpha * mx


def bootstrap_alpha(points: Sequence[tuple[float, float]], resamples: int = 2000,
                    seed: int = 0) -> tuple[float, float] | None:
    """Percentile 95% interval of α over resampled runs; None when fewer than three runs."""
    if len(points) < 3:
        return None
    rng = random.Random(seed)
    alphas = []
    for _ in range(resamples):
        sample = [points[rng.randrange(len(points))] for _ in points]
        if len({n for n, _ in sample}) > 1:
            alphas.append(fit_log(sample)[0])
    alphas.sort()
    return alphas[int(0.025 * len(alphas))], alphas[int(0.975 * len(alphas)) - 1]


def compare(rows: Sequence[dict[str, Any]], x: str, by: str | None, metric: str) -> dict[str, Any]:
    """{condition: {"points": [(N, value)], "by_x": {N: (mean, lo, hi, n)}, "alpha", "C", "alpha_ci"}}."""
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        n, value = _number(row.get(x)), _number(row.get(metric))
        if n is None or value is None or n <= 0:
            continue
        groups[str(row.get(by, "")) if by else "all"].append((n, value))
    out = {}
    for condition, points in sorted(groups.items()):
        by_x: dict[float, list[float]] = defaultdict(list)
        for n, value in points:
            by_x[n].append(value)
        result: dict[str, Any] = {"points": points,
                                  "by_x": {n: (*mean_interval(v), len(v)) for n, v in sorted(by_x.items())}}
        if len(by_x) > 1:
            result["alpha"], result["C"] = fit_log(points)
            result["alpha_ci"] = bootstrap_alpha(points)
        out[condition] = result
    return out


def markdown(result: dict[str, Any], x: str, by: str | None, metric: str) -> str:
    lines = [f"# {metric} against {x}" + (f", by {by}" if by else ""), "",
             f"| {by or 'condition'} | {x} | mean | 95% interval | runs |", "|---|---|---|---|---|"]
    for condition, r in result.items():
        for n, (mean, lo, hi, k) in r["by_x"].items():
            interval = "n/a (one run)" if lo is None else f"[{lo:.4g}, {hi:.4g}]"
            lines.append(f"| {condition} | {n:g} | {mean:.4g} | {interval} | {k} |")
    lines += ["", f"Fit {metric} = α·ln N + C:", "", f"| {by or 'condition'} | α | α 95% interval | C | runs |",
              "|---|---|---|---|---|"]
    for condition, r in result.items():
        if "alpha" not in r:
            continue
        ci = r["alpha_ci"]
        shown = "n/a (under 3 runs)" if ci is None else f"[{ci[0]:.4g}, {ci[1]:.4g}]"
        tells = "" if ci is None else (" (excludes 0)" if ci[0] > 0 or ci[1] < 0 else " (includes 0: cannot tell)")
        lines.append(f"| {condition} | {r['alpha']:.4g} | {shown}{tells} | {r['C']:.4g} | {len(r['points'])} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], x: str, metric: str, out: str | Path) -> None:
    import matplotlib.pyplot as plt

    from humpback.plotting import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for condition, r in result.items():
        ns = list(r["by_x"])
        means = [r["by_x"][n][0] for n in ns]
        errs = [[m - (v[1] if v[1] is not None else m) for m, v in zip(means, r["by_x"].values())],
                [(v[2] if v[2] is not None else m) - m for m, v in zip(means, r["by_x"].values())]]
        line = ax.errorbar(ns, means, yerr=errs, marker="o", capsize=3, linestyle="none", label=condition)
        if "alpha" in r:
            grid = [min(ns) * (max(ns) / min(ns)) ** (i / 50) for i in range(51)]
            ax.plot(grid, [r["alpha"] * math.log(n) + r["C"] for n in grid], color=line[0].get_color(),
                    label=f"{condition}: α = {r['alpha']:.3g}")
    ax.set_xscale("log")
    ax.set(xlabel=f"{x} (log scale)", ylabel=metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--x", default="selected.iteration_2", help="the x axis: a param or headline key")
    parser.add_argument("--by", help="the param that names a condition (e.g. curate.method, train.mix)")
    parser.add_argument("--metric", help=f"headline metric (default: the first present of {DEFAULT_METRICS})")
    parser.add_argument("--repo", help="the DVC repository (default: here)")
    parser.add_argument("--out", required=True, help="output prefix: writes <out>.md and <out>.png")
    args = parser.parse_args(argv)
    rows = load(args.repo)
    try:
        metric = pick_metric(rows, args.metric)
        result = compare(rows, args.x, args.by, metric)
    except ValueError as exc:
        print(f"experiments: error: {exc}", file=sys.stderr)
        return 1
    if not result:
        print(f"experiments: error: no experiment has both {args.x} and {metric}", file=sys.stderr)
        return 1
    text = markdown(result, args.x, args.by, metric)
    Path(f"{args.out}.md").parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.md").write_text(text)
    plot(result, args.x, metric, f"{args.out}.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
