"""The project's intervals, in one place: every comparison the stages and the sweep read-out report uses these.

- Percentile bootstrap, 95%: of a mean over items (the paired comparisons over questions or prompts: a resample
  draws items, and an item brings both sides' values, so what the items share cancels out of the interval), of a
  ROC-AUC (stratified, the curators on the labelled dev set), and of the slope α of y = α·ln N + C over whole seeds
  (the sweep read-out).
- Student t, 95%: a mean's interval, the slope's interval on n − 2 df, and Welch's interval for the difference of
  two arms' means (unequal variances, Welch–Satterthwaite df).

Every bootstrap is seeded through numpy's `default_rng(seed)` and cut with `numpy.percentile`'s default (linear)
method: an interval is an instrument, and the same inputs give the same numbers in every run.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

# The two-sided 95% interval's percentiles.
PERCENTILES = (2.5, 97.5)


def percentile_interval(draws: np.ndarray) -> tuple[np.float64, np.float64]:
    """The 95% percentile interval (low, high) of a bootstrap's resampled statistics, as numpy scalars (callers that
    round keep numpy's rounding)."""
    low, high = np.percentile(draws, list(PERCENTILES))
    return low, high


def bootstrap_mean_interval(values: np.ndarray, resamples: int, seed: int) -> tuple[np.float64, np.float64]:
    """95% percentile interval of the mean of `values` (a float array, one value per item) over `resamples`
    resamples of the items with replacement, seeded; one (resamples × n) draw of item indices."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return percentile_interval(means)


def bootstrap_auc_ci(labels: Sequence[int], values: Sequence[float], resamples: int, seed: int) -> list[float] | None:
    """95% percentile interval of the ROC-AUC over `resamples` stratified bootstrap resamples (positives and
    negatives each drawn with replacement at their own count, so every resample has both classes), seeded.
    None when the AUC is undefined (one class only).

    Each resample's AUC is the Mann-Whitney statistic that sklearn's roc_auc_score computes (a tie counts one
    half), taken from the positive × negative comparison matrix weighted by how often each row was drawn:
    thousands of resamples cost one matrix product instead of thousands of sklearn calls."""
    y, x = np.asarray(labels), np.asarray(values, dtype=float)
    pos, neg = x[y == 1], x[y != 1]
    if not len(pos) or not len(neg):
        return None
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    rng = np.random.default_rng(seed)
    draws_pos = rng.multinomial(len(pos), np.full(len(pos), 1 / len(pos)), size=resamples)
    draws_neg = rng.multinomial(len(neg), np.full(len(neg), 1 / len(neg)), size=resamples)
    aucs = np.einsum("bi,ij,bj->b", draws_pos, wins, draws_neg) / (len(pos) * len(neg))
    low, high = percentile_interval(aucs)
    return [float(low), float(high)]


def t_multiplier(df: int) -> float:
    """The two-sided 95% Student t quantile."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def mean_interval(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Mean and its 95% t interval (None with a single value)."""
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, None, None
    half = t_multiplier(len(values) - 1) * float(stats.sem(values))
    return mean, mean - half, mean + half


def welch(values: Sequence[float], reference: Sequence[float]) -> dict[str, Any]:
    """mean(values) − mean(reference) with its Welch 95% t interval (unequal variances, Welch–Satterthwaite df),
    n of each; the interval is None, with the reason, where it cannot be computed: an arm with one run has no
    spread to estimate, and two arms without spread give a zero standard error (no t)."""
    from scipy import stats

    out: dict[str, Any] = {
        "difference": float(np.mean(values) - np.mean(reference)),
        "n": len(values),
        "n_ref": len(reference),
        "ci": None,
        "df": None,
        "why": None,
    }
    ones = [name for name, v in (("the arm", values), ("the reference", reference)) if len(v) < 2]
    if ones:
        out["why"] = f"cannot be computed: one run in {' and '.join(ones)}"
    elif np.var(values) == 0 and np.var(reference) == 0:
        out["why"] = "cannot be computed: no spread in either arm"
    else:
        with warnings.catch_warnings():
            # An arm whose runs all read the same (a 16-question win rate can) has zero variance, which Welch
            # handles; scipy still warns of precision loss from demeaning identical values.
            if np.ptp(values) == 0 or np.ptp(reference) == 0:
                warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
            test = stats.ttest_ind(values, reference, equal_var=False)
        ci = test.confidence_interval(0.95)
        out.update(ci=(float(ci.low), float(ci.high)), df=float(test.df))
    return out


def paired(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """mean(arm − reference) over (arm, reference) pairs (e.g. one per training seed: the same trained models read
    two ways) with its paired 95% t interval on pairs − 1 df (the t interval of the differences' mean), in the keys
    `welch` gives; None, with the reason, where it cannot be computed (one pair, or the same difference in every
    pair)."""
    differences = [a - b for a, b in pairs]
    out: dict[str, Any] = {"n": len(pairs), "n_ref": len(pairs), "ci": None, "df": None, "why": None}
    if not differences:
        return {**out, "difference": float("nan"), "why": "cannot be computed: 0 seeds in both arms"}
    mean, low, high = mean_interval(differences)
    out["difference"] = mean
    if low is None:
        out["why"] = "cannot be computed: 1 seed in both arms"
    elif np.allclose(differences, differences[0], rtol=1e-9, atol=0):  # float dust is not spread
        out["why"] = "cannot be computed: the same difference at every seed"
    else:
        out.update(ci=(low, high), df=float(len(differences) - 1))
    return out


def fit_log(points: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Least squares y = α·ln N + C over every run: α, C, n and α's 95% t interval on n − 2 df (None under 3
    runs, where the residuals leave no degree of freedom)."""
    from scipy import stats

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


def bootstrap_alpha(
    points: Sequence[tuple[float, Any, float]], resamples: int, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile 95% interval of α (`fit_log`'s slope) from (N, seed, value) points, resampling whole seeds within
    each N: a seed's runs share its pool and curation, so a seed (not a run) is the replicate, and every resample
    keeps every N level. None where no N has two seeds (nothing to resample)."""
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
    low, high = percentile_interval(alphas)
    return float(low), float(high)
