"""The comparison of experiments: the α·log N + C fit and the intervals, against reference implementations."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats

from humpback.experiments import (
    bootstrap_alpha,
    compare,
    fit_log,
    markdown,
    mean_interval,
    normalise,
    plot,
    without_workspace_copy,
)


def test_fit_matches_numpy_polyfit_on_log_n():
    rng = random.Random(3)
    points = [(n, 6.95 * math.log(n) + 12 + rng.gauss(0, 0.5)) for n in (100, 200, 400, 800, 1600, 3200)]
    alpha, c = fit_log(points)
    ref_alpha, ref_c = np.polyfit([math.log(n) for n, _ in points], [y for _, y in points], 1)
    assert (alpha, c) == pytest.approx((ref_alpha, ref_c))
    low, high = bootstrap_alpha(points)
    assert low < alpha < high and low > 0  # a clear slope: the interval excludes zero


def test_mean_interval_matches_scipy_t_interval():
    values = [0.12, 0.15, 0.11, 0.18]
    mean, lo, hi = mean_interval(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values)) and (lo, hi) == pytest.approx(ref, rel=1e-3)
    assert mean_interval([0.2]) == (0.2, None, None)


def test_compare_groups_conditions_and_averages_seeds(tmp_path):
    rows = [normalise({"params.yaml:curate.method": m, "params.yaml:seeds.training": s,
                       "metrics/headline.json:selected.iteration_2": n,
                       "metrics/headline.json:likelihood.m2.loglik_other": -1.0 + 0.01 * math.log(n) + 0.001 * s})
            for m in ("pmi", "none") for n in (8, 64) for s in (0, 1)]
    rows.append({"curate.method": "pmi"})  # a run without the metric is left out, not a zero
    result = compare(rows, "selected.iteration_2", "curate.method", "likelihood.m2.loglik_other")
    assert set(result) == {"none", "pmi"}
    mean, lo, hi, n = result["pmi"]["by_x"][64.0]
    assert n == 2 and lo < mean < hi
    assert result["pmi"]["alpha"] == pytest.approx(0.01)
    text = markdown(result, "selected.iteration_2", "curate.method", "likelihood.m2.loglik_other")
    assert "| pmi | 64 |" in text and "α" in text
    plot(result, "selected.iteration_2", "likelihood.m2.loglik_other", tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"


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
