"""The read-out of a sweep: conditions never pooled, the pairs selected as x, the α·log N fit with its t and
seed-bootstrap intervals, runs not read listed; on synthetic exp_show rows, against reference computations."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from humpback.experiments import (
    bootstrap_alpha,
    compare,
    fit_log,
    main,
    markdown,
    mean_interval,
    split_row,
    without_workspace_copy,
)

ROOT = Path(__file__).resolve().parents[1]
METRIC = "likelihood.m2.loglik_other"
_names = itertools.count()


def row(value: float | None = None, *, selected: int | None = None, state: str | None = "Success",
        **params) -> dict:
    """One exp_show row as DVC writes it when column names collide (file-prefixed); params by dotted name."""
    out = {"Experiment": f"exp-{next(_names)}", "rev": "abc1234", "typ": "branch_commit", "State": state}
    if value is not None:
        out[f"metrics/headline.json:{METRIC}"] = value
    if selected is not None:
        out["metrics/headline.json:selected.iteration_2"] = selected
    out.update({f"params.yaml:{k}": v for k, v in params.items()})
    return out


def test_fit_is_least_squares_on_log_n_with_its_t_interval():
    rng = random.Random(3)
    points = [(n, 6.95 * math.log(n) + 12 + rng.gauss(0, 0.5)) for n in (100, 200, 400, 800, 1600, 3200)]
    fit = fit_log(points)
    xs, ys = np.log([n for n, _ in points]), np.array([y for _, y in points])
    ref_alpha, ref_c = np.polyfit(xs, ys, 1)
    assert (fit["alpha"], fit["C"], fit["n"]) == pytest.approx((ref_alpha, ref_c, 6))
    residuals = ys - (ref_alpha * xs + ref_c)
    se = math.sqrt(residuals @ residuals / (len(xs) - 2) / ((xs - xs.mean()) @ (xs - xs.mean())))
    assert fit["alpha_ci"] == pytest.approx(stats.t.interval(0.95, len(xs) - 2, loc=ref_alpha, scale=se))
    assert fit_log(points[:2])["alpha_ci"] is None  # two runs leave no degree of freedom


def test_mean_interval_uses_t_at_every_df():
    values = [0.12, 0.15, 0.11, 0.18, 0.13, 0.16, 0.10, 0.17, 0.14, 0.12, 0.19, 0.15]  # 11 df: past any table
    mean, lo, hi = mean_interval(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values)) and (lo, hi) == pytest.approx(ref)
    assert (hi - mean) / stats.sem(values) > 1.96 * 1.1  # the old 1.96 fallback was 12% too narrow here
    assert mean_interval([0.2]) == (0.2, None, None)


def test_bootstrap_resamples_whole_seeds_within_each_n():
    # Two N levels, two seeds each: a resample draws two seeds at each level, so α takes one of 9 values, the
    # extremes each with probability 1/16 (> 2.5%): the percentile interval is exactly [min, max]. Resampling
    # runs across levels instead would reach other slopes (a level drawn three times, another once).
    values = {8: (1.0, 1.3), 64: (1.5, 2.1)}
    points = [(n, seed, v) for n, vs in values.items() for seed, v in enumerate(vs)]
    low, high = bootstrap_alpha(points)
    width = math.log(64) - math.log(8)
    slopes = [(np.mean(b) - np.mean(a)) / width for a in itertools.product(values[8], repeat=2)
              for b in itertools.product(values[64], repeat=2)]
    assert (low, high) == pytest.approx((min(slopes), max(slopes)))
    # One seed per N: nothing to resample, no interval rather than a zero-width one.
    assert bootstrap_alpha([(8, 0, 1.0), (16, 0, 1.2), (64, 0, 1.5)]) is None


def test_a_run_differing_in_any_param_but_x_and_seeds_is_its_own_condition():
    rows = [row(-3.10 + 0.01 * math.log(n) + 0.001 * s, selected=n, **{"data.web.limit": 64,
            "select.iteration_2.cap": n, "curate.method": "pmi", "seeds.training": s, "seeds.training_m2": s})
            for n in (8, 32) for s in (0, 1)]
    rows += [row(-3.00 + 0.02 * math.log(n), selected=n, **{"data.web.limit": 256, "select.iteration_2.cap": n,
             "curate.method": "pmi", "seeds.training": 0, "seeds.training_m2": 0}) for n in (8, 64)]
    rows.append(row(-3.05, selected=63, **{"data.web.limit": 64, "select.iteration_2.cap": 0,
                "curate.method": "none", "seeds.training": 0, "seeds.training_m2": 0}))
    readout = compare(rows)
    # Seeds and the cap (which sets x) are no condition; the web pool and the method are, each a column.
    assert readout.keys == ["curate.method", "data.web.limit"]
    assert set(readout.conditions) == {("pmi", "64"), ("pmi", "256"), ("none", "64")}
    assert set(readout.seeds) == {"seeds.training", "seeds.training_m2"}
    small = readout.conditions[("pmi", "64")]
    assert small["alpha"] == pytest.approx(0.01) and small["n"] == 4
    assert small["by_x"][8.0][3] == 2  # two seeds averaged, never the 256-segment run at the same N
    assert readout.conditions[("pmi", "256")]["alpha"] == pytest.approx(0.02)
    text = markdown(readout)
    assert "| curate.method | data.web.limit | selected.iteration_2 |" in text and "| pmi | 256 | 64 |" in text
    # --by puts a key first, even one that does not differ; the rest stay columns.
    assert compare(rows, by=["seeds.sampling"]).keys == ["seeds.sampling", "curate.method", "data.web.limit"]


def test_x_is_the_pairs_selected_and_a_cap_0_run_is_kept_or_listed():
    rows = [row(-3.09 + 0.005 * math.log(n), selected=n, **{"select.iteration_2.cap": cap})
            for n, cap in ((4, 4), (16, 16), (35, 0))]
    readout = compare(rows)
    assert list(readout.conditions[("all",)]["by_x"]) == [4, 16, 35]  # the baseline at the count it selected
    assert readout.x_set_by == ("select.iteration_2.cap",) and not readout.not_read
    by_cap = compare(rows, x="select.iteration_2.cap")
    assert list(by_cap.conditions[("all",)]["by_x"]) == [4, 16]
    [(_, reason)] = by_cap.not_read
    assert "select.iteration_2.cap = 0" in reason and "selected.iteration_2" in reason
    assert "## Not read" in markdown(by_cap) and reason in markdown(by_cap)


def test_failed_and_metricless_runs_are_listed_not_dropped():
    rows = [row(-3.09, selected=4), row(-3.08, selected=16), row(None, selected=8),
            row(None, state="Failed"), row("!", selected=32)]
    readout = compare(rows, metric=METRIC)
    reasons = [reason for _, reason in readout.not_read]
    assert reasons == [f"no {METRIC}", "state Failed", f"{METRIC} unreadable ('!')"]
    text = markdown(readout)
    assert all(reason in text for reason in reasons) and "2 runs read, 3 not read" in text


def test_columns_split_into_params_and_metrics():
    run = split_row({"rev": "main", "likelihood.m2.loglik_other": -3.1, "likelihood.bootstrap": 10000,
                     "train.max_steps": 8, "selected.iteration_2": 35, "params.yaml:seeds.training": 1,
                     "metrics/headline.json:win_rate.m2": 50.0, "humpback/experiments.py": "ab12"})
    assert set(run.params) == {"likelihood.bootstrap", "train.max_steps", "seeds.training"}  # a moved key too
    assert {"likelihood.m2.loglik_other", "selected.iteration_2", "win_rate.m2"} <= set(run.metrics)


def test_the_committed_cap_sweep_reads_from_its_rows_file(tmp_path):
    rows_file = ROOT / "docs" / "sweeps" / "cap.runs.json"
    assert main(["--rows", str(rows_file), "--out", str(tmp_path / "cap")]) == 0
    rows = json.loads(rows_file.read_text())["rows"]
    ns = [r["metrics/headline.json:selected.iteration_2"] for r in rows]
    ref = stats.linregress(np.log(ns), [r[f"metrics/headline.json:{METRIC}"] for r in rows])
    text = (tmp_path / "cap.md").read_text()
    assert "5 runs read, 0 not read" in text and f"| all | {ref.slope:.4g} |" in text
    assert (tmp_path / "cap.png").read_bytes()[:4] == b"\x89PNG"
    assert text == (ROOT / "docs" / "sweeps" / "cap.md").read_text()  # the committed table is this read-out


def test_a_clean_workspace_is_not_counted_twice():
    # exp_show after a committed run: the workspace and the branch are one run; an experiment is another.
    base = {"select.iteration_2.cap": 0, "likelihood.m2.loglik_other": -3.085}
    rows = [
        {"rev": "workspace", "typ": "baseline", "Created": None, **base},
        {"rev": "main", "typ": "baseline", "Created": "05:48 AM", **base},
        {"rev": "5bb296d", "typ": "branch_commit", "Experiment": "x", "select.iteration_2.cap": 4,
         "likelihood.m2.loglik_other": -3.093},
    ]
    assert [r["rev"] for r in without_workspace_copy(rows)] == ["main", "5bb296d"]
    changed = [{**rows[0], "select.iteration_2.cap": 8}, *rows[1:]]  # an uncommitted run of its own stays
    assert [r["rev"] for r in without_workspace_copy(changed)] == ["workspace", "main", "5bb296d"]
