"""humpback/statistics.py: every interval the project reports, against an independent reference (scipy, numpy,
a textbook formula) and, for the bootstraps, draw for draw against numpy's own generator (the stages' numbers
depend on the exact draws: one seeded `default_rng`, one index draw, `numpy.percentile`'s linear method)."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from scipy import stats

from humpback.statistics import (
    bootstrap_alpha,
    bootstrap_auc_ci,
    bootstrap_mean_interval,
    fit_log,
    mean_interval,
    paired,
    percentile_interval,
    t_multiplier,
    welch,
)


def test_t_multiplier_is_scipys_two_sided_95_quantile():
    for df in (1, 2, 3, 5, 11, 30, 1000):
        assert t_multiplier(df) == float(stats.t.ppf(0.975, df))
        lo, hi = stats.t.interval(0.95, df)
        assert (-t_multiplier(df), t_multiplier(df)) == pytest.approx((lo, hi), rel=1e-12)
    assert t_multiplier(1000) == pytest.approx(1.962, abs=1e-3)  # toward the normal's 1.96


def test_percentile_interval_is_numpys_linear_percentile():
    draws = np.random.default_rng(5).normal(size=999)
    low, high = percentile_interval(draws)
    assert (low, high) == tuple(np.percentile(draws, [2.5, 97.5]))
    assert (low, high) == tuple(np.quantile(draws, [0.025, 0.975], method="linear"))
    assert isinstance(low, np.float64)  # numpy scalars: a caller's round() stays numpy's


def test_mean_bootstrap_is_one_seeded_index_draw_and_close_to_scipys():
    values = np.random.default_rng(2).normal(0.3, 1.0, 40)
    low, high = bootstrap_mean_interval(values, 5000, seed=9)
    rng = np.random.default_rng(9)
    means = values[rng.integers(0, 40, size=(5000, 40))].mean(axis=1)
    assert (low, high) == tuple(np.percentile(means, [2.5, 97.5]))
    assert bootstrap_mean_interval(values, 5000, seed=9) == (low, high)
    assert bootstrap_mean_interval(values, 5000, seed=10) != (low, high)
    # scipy's percentile bootstrap resamples differently, so it agrees in distribution only
    ref = stats.bootstrap((values,), np.mean, n_resamples=5000, method="percentile", random_state=1)
    assert (low, high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=0.05)
    assert bootstrap_mean_interval(np.array([0.5]), 10, seed=0) == (0.5, 0.5)  # one item: no spread


def test_the_paired_comparisons_use_the_shared_bootstrap():
    """likelihood's paired difference over questions is the mean bootstrap of the per-question differences."""
    from humpback.evaluation.likelihood import paired_difference

    rng = random.Random(4)
    a = {f"q{i}": rng.gauss(-2.0, 0.3) for i in range(25)}
    b = {k: v - rng.gauss(0.02, 0.05) for k, v in a.items()}
    out = paired_difference(a, b, 3000, seed=2)
    diff = np.array([a[k] - b[k] for k in sorted(a)], dtype=float)
    low, high = bootstrap_mean_interval(diff, 3000, seed=2)
    assert (out["ci_low"], out["ci_high"], out["n"]) == (float(low), float(high), 25)
    assert out["difference"] == float(diff.mean())


def test_welch_df_is_scipys_and_the_satterthwaite_formula():
    rng = np.random.default_rng(8)
    for n, m in ((3, 4), (5, 2), (2, 9), (12, 12)):
        arm, reference = rng.normal(0, 1, n).tolist(), rng.normal(0.3, 2, m).tolist()
        result = welch(arm, reference)
        test = stats.ttest_ind(arm, reference, equal_var=False)
        assert result["df"] == float(test.df)
        va, vb = np.var(arm, ddof=1) / n, np.var(reference, ddof=1) / m
        assert result["df"] == pytest.approx((va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (m - 1)), rel=1e-12)


def test_welch_with_one_arm_all_alike_is_the_other_arms_t_interval_without_a_warning():
    import warnings

    arm, reference = [43.75, 43.75, 43.75], [40.625, 43.75, 50.0]  # a 16-question win rate, three seeds
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = welch(arm, reference)
    mean = 43.75 - np.mean(reference)
    assert result["ci"] == pytest.approx(stats.t.interval(0.95, 2, loc=mean, scale=stats.sem(reference)))


def test_paired_is_the_t_interval_of_the_differences_and_says_when_it_cannot_be_computed():
    rng = np.random.default_rng(9)
    shared = rng.normal(0, 1, 3)  # each seed's own level, in both arms: pairing removes it
    arm, reference = (shared + 0.5 + rng.normal(0, 0.1, 3)).tolist(), (shared + rng.normal(0, 0.1, 3)).tolist()
    result = paired(list(zip(arm, reference)))
    differences = np.subtract(arm, reference)
    assert result["difference"] == pytest.approx(differences.mean()) and (result["n"], result["df"]) == (3, 2)
    assert result["ci"] == pytest.approx(
        stats.t.interval(0.95, 2, loc=differences.mean(), scale=stats.sem(differences))
    )
    assert result["ci"][0] > 0 and welch(arm, reference)["ci"][0] < 0  # the seeds' spread hides it from Welch
    assert paired([(1.0, 0.5)])["why"] == "cannot be computed: 1 seed in both arms"
    assert paired([(1.0, 0.5), (2.0, 1.5)])["why"] == "cannot be computed: the same difference at every seed"


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


def test_alpha_bootstrap_resamples_whole_seeds_within_each_n():
    # Two N levels, two seeds each: a resample draws two seeds at each level, so α takes one of 9 values, the
    # extremes each with probability 1/16 (> 2.5%): the percentile interval is exactly [min, max]. Resampling
    # runs across levels instead would reach other slopes (a level drawn three times, another once).
    values = {8: (1.0, 1.3), 64: (1.5, 2.1)}
    points = [(n, seed, v) for n, vs in values.items() for seed, v in enumerate(vs)]
    low, high = bootstrap_alpha(points, 2000)
    width = math.log(64) - math.log(8)
    slopes = [
        (np.mean(b) - np.mean(a)) / width
        for a in itertools.product(values[8], repeat=2)
        for b in itertools.product(values[64], repeat=2)
    ]
    assert (low, high) == pytest.approx((min(slopes), max(slopes)))
    # One seed per N: nothing to resample, no interval rather than a zero-width one.
    assert bootstrap_alpha([(8, 0, 1.0), (16, 0, 1.2), (64, 0, 1.5)], 2000) is None


def test_welch_interval_is_the_hand_computation_and_scipys():
    arm, reference = [0.0051, 0.0064, 0.0032, 0.0070], [0.0012, 0.0030, 0.0008]
    result = welch(arm, reference)
    va, vb = np.var(arm, ddof=1) / len(arm), np.var(reference, ddof=1) / len(reference)
    df = (va + vb) ** 2 / (va**2 / (len(arm) - 1) + vb**2 / (len(reference) - 1))  # Welch–Satterthwaite
    difference = np.mean(arm) - np.mean(reference)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (result["difference"], result["df"]) == pytest.approx((difference, df))
    assert result["ci"] == pytest.approx((difference - half, difference + half))
    ref = stats.ttest_ind(arm, reference, equal_var=False).confidence_interval(0.95)
    assert result["ci"] == pytest.approx((ref.low, ref.high)) and (result["n"], result["n_ref"]) == (4, 3)
    # One run in an arm: no spread to estimate, so no interval (and the reason), never a made-up one.
    one = welch(arm, [0.0012])
    assert one["ci"] is None and one["why"] == "cannot be computed: one run in the reference"
    assert one["difference"] == pytest.approx(np.mean(arm) - 0.0012)
    assert welch([1.0, 1.0], [0.0, 0.0])["why"] == "cannot be computed: no spread in either arm"


def test_auc_interval_is_seeded_brackets_the_auc_and_has_the_textbook_width():
    """Against an independent reference: Hanley & McNeil's (1982) standard error of the AUC gives a normal
    95% interval; the bootstrap's percentile interval must bracket the AUC and have about its width."""
    from sklearn.metrics import roc_auc_score

    rng = random.Random(7)
    labels = [1] * 40 + [0] * 60
    values = [rng.gauss(1.0, 1.0) for _ in range(40)] + [rng.gauss(0.0, 1.0) for _ in range(60)]
    auc = roc_auc_score(labels, values)
    low, high = bootstrap_auc_ci(labels, values, 2000, seed=1)
    assert [low, high] == bootstrap_auc_ci(labels, values, 2000, seed=1)
    assert low < auc < high
    n1, n0 = 40, 60
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = math.sqrt((auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n1 * n0))
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert bootstrap_auc_ci([1, 1], [0.1, 0.2], 10, seed=0) is None
