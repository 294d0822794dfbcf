"""The read-out of a sweep: conditions never pooled, the pairs selected as x, the α·log N fit with its t and
seed-bootstrap intervals, runs not read listed, arms contrasted with a Welch interval, several metrics (a
difference of two keys, the paper preset) in one read; on synthetic exp_show rows, against reference
computations."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from humpback.evaluation.experiments import (
    PRESETS,
    READOUT_MARK,
    compare_runs,
    main,
    markdown,
    parse_contrast,
    plot,
    split_row,
    without_workspace_copy,
)
from humpback.statistics import welch
from tests.conftest import cli_args

ROOT = Path(__file__).resolve().parents[2]
METRIC = "likelihood.m2.loglik_other"
_names = itertools.count()


def row(
    value: float | None = None,
    *,
    selected: int | None = None,
    state: str | None = "Success",
    metrics: dict | None = None,
    **params,
) -> dict:
    """One exp_show row as DVC writes it when column names collide (file-prefixed); params and other headline
    metrics by dotted name."""
    out = {"Experiment": f"exp-{next(_names)}", "rev": "abc1234", "typ": "branch_commit", "State": state}
    out.update({f"metrics/headline.json:{k}": v for k, v in (metrics or {}).items()})
    if value is not None:
        out[f"metrics/headline.json:{METRIC}"] = value
    if selected is not None:
        out["metrics/headline.json:selected.iteration_2"] = selected
    out.update({f"params.yaml:{k}": v for k, v in params.items()})
    return out


def test_a_run_differing_in_any_param_but_x_and_seeds_is_its_own_condition():
    rows = [
        row(
            -3.10 + 0.01 * math.log(n) + 0.001 * s,
            selected=n,
            **{
                "data.web.limit": 64,
                "select.iteration_2.cap": n,
                "curate.method": "pmi",
                "seeds.training": s,
                "seeds.training_m2": s,
            },
        )
        for n in (8, 32)
        for s in (0, 1)
    ]
    rows += [
        row(
            -3.00 + 0.02 * math.log(n),
            selected=n,
            **{
                "data.web.limit": 256,
                "select.iteration_2.cap": n,
                "curate.method": "pmi",
                "seeds.training": 0,
                "seeds.training_m2": 0,
            },
        )
        for n in (8, 64)
    ]
    rows.append(
        row(
            -3.05,
            selected=63,
            **{
                "data.web.limit": 64,
                "select.iteration_2.cap": 0,
                "curate.method": "none",
                "seeds.training": 0,
                "seeds.training_m2": 0,
            },
        )
    )
    readout = compare_runs(rows)
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
    assert compare_runs(rows, by=["seeds.sampling"]).keys == ["seeds.sampling", "curate.method", "data.web.limit"]


def test_x_is_the_pairs_selected_and_a_cap_0_run_is_kept_or_listed():
    rows = [
        row(-3.09 + 0.005 * math.log(n), selected=n, **{"select.iteration_2.cap": cap})
        for n, cap in ((4, 4), (16, 16), (35, 0))
    ]
    readout = compare_runs(rows)
    assert list(readout.conditions[("all",)]["by_x"]) == [4, 16, 35]  # the baseline at the count it selected
    assert readout.x_set_by == ("select.iteration_2.cap",) and not readout.not_read
    by_cap = compare_runs(rows, x="select.iteration_2.cap")
    assert list(by_cap.conditions[("all",)]["by_x"]) == [4, 16]
    [(_, reason)] = by_cap.not_read
    assert "select.iteration_2.cap = 0" in reason and "selected.iteration_2" in reason
    assert "## Not read" in markdown(by_cap) and reason in markdown(by_cap)


def test_a_metric_the_sweep_never_moves_is_not_fitted():
    # an iteration-2 sweep reads M1 − M0 too: the same value in every run, so a slope would be 0 with a NaN interval
    rows = [row(-3.0, selected=n, **{"seeds.training_m2": s}) for n in (4, 32) for s in (0, 1)]
    readout = compare_runs(rows)
    text = markdown(readout)
    assert "No fit for all: the metric is the same in every run" in text
    assert "nan" not in text and "alpha" not in readout.conditions[("all",)]
    rows[0][f"metrics/headline.json:{METRIC}"] = -2.9  # one run moves: fitted again
    assert "alpha" in compare_runs(rows).conditions[("all",)]


def test_failed_and_metricless_runs_are_listed_not_dropped():
    rows = [
        row(-3.09, selected=4),
        row(-3.08, selected=16),
        row(None, selected=8),
        row(None, state="Failed"),
        row("!", selected=32),
    ]
    readout = compare_runs(rows, metric=METRIC)
    reasons = [reason for _, reason in readout.not_read]
    assert reasons == [f"no {METRIC}", "state Failed", f"{METRIC} unreadable ('!')"]
    text = markdown(readout)
    assert all(reason in text for reason in reasons) and "2 runs read, 3 not read" in text


def test_a_run_repeating_another_runs_params_is_listed_not_pooled():
    """Two runs with every param equal (a rerun to see the judge's noise, the baseline kept under two names) are
    not two seeds: the second is listed, so n counts seeds only."""
    params = {"select.iteration_2.cap": 8, "seeds.training_m2": 0}
    rows = [row(-3.09, selected=8, **params), row(-3.07, selected=8, **params)]
    rows.append(row(-3.08, selected=8, **{**params, "seeds.training_m2": 1}))
    readout = compare_runs(rows, metric=METRIC)
    [(name, reason)] = readout.not_read
    assert (
        name.startswith(rows[1]["Experiment"]) and rows[0]["Experiment"] in reason and "not a seed replicate" in reason
    )
    [(mean, _, _, n)] = readout.conditions[("all",)]["by_x"].values()
    assert n == 2 and mean == pytest.approx((-3.09 - 3.08) / 2)


def test_columns_split_into_params_and_metrics():
    run = split_row(
        {
            "rev": "main",
            "likelihood.m2.loglik_other": -3.1,
            "likelihood.bootstrap": 10000,
            "train.max_steps": 8,
            "selected.iteration_2": 35,
            "params.yaml:seeds.training": 1,
            "metrics/headline.json:win_rate.m2": 50.0,
            "humpback/evaluation/experiments.py": "ab12",
        }
    )
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


def test_a_write_up_keeps_its_prose_above_the_mark_and_its_tables_are_read_again(tmp_path):
    rows_file = ROOT / "docs" / "sweeps" / "cap.runs.json"
    out = tmp_path / "cap"
    prose = "# The cap sweep\n\nWhat the figures show, and the commands that made them.\n\n"
    (tmp_path / "cap.md").write_text(f"{prose}{READOUT_MARK}\n\n| stale | table |\n")
    assert main(["--rows", str(rows_file), "--out", str(out)]) == 0
    text = (tmp_path / "cap.md").read_text()
    assert text.startswith(prose + READOUT_MARK) and "stale" not in text and "5 runs read, 0 not read" in text
    assert main(["--rows", str(rows_file), "--out", str(out)]) == 0  # a second read-out changes nothing
    assert (tmp_path / "cap.md").read_text() == text
    (tmp_path / "cap.md").write_text("no mark: replaced whole\n")
    assert main(["--rows", str(rows_file), "--out", str(out)]) == 0
    assert not (tmp_path / "cap.md").read_text().startswith("no mark")


# Each measured write-up in docs/sweeps/ with the read-out that made its tables (its "Commands" section).
WRITE_UPS = {
    "curated": ["--contrast", "curate.method=pmi", "--metrics", "paper"],
    "mix": ["--contrast", "train.mix=seed+augmented", "--metrics", "paper"],
    "tagging": [
        *("--contrast", "train.tagging=true", "--contrast", "respond.system_prompt=S_a"),
        *("--paired", "respond.system_prompt", "--metrics", "paper"),
        *("--metric", "win_rate.m2", "--metric", "likelihood.m2.loglik_other", "--metric", "likelihood.m2.loglik_seed"),
    ],
    "scaling": [
        *("--metric", "comparisons.m2_vs_m0.loglik_other.difference"),
        *("--metric", "comparisons.m2_vs_m0.loglik_seed.difference"),
        *("--metric", "comparisons.m2_vs_m0.judged.difference"),
        *("--metric", "win_rate.m2"),
        *("--metric", "likelihood.m1.loglik_other - likelihood.m0.loglik_other"),
        *("--metric", "likelihood.m1.loglik_seed - likelihood.m0.loglik_seed"),
    ],
}


@pytest.mark.parametrize("name", sorted(WRITE_UPS))
def test_a_committed_write_up_is_its_rows_read_again(tmp_path, name):
    committed = ROOT / "docs" / "sweeps" / f"{name}.md"
    (tmp_path / f"{name}.md").write_text(committed.read_text())
    rows = str(ROOT / "docs" / "sweeps" / f"{name}.runs.json")
    assert main(["--rows", rows, *WRITE_UPS[name], "--out", str(tmp_path / name)]) == 0
    assert READOUT_MARK in committed.read_text()  # the prose above it is the write-up's own
    assert (tmp_path / f"{name}.md").read_text() == committed.read_text()


def test_a_clean_workspace_is_not_counted_twice():
    # exp_show after a committed run: the workspace and the branch are one run; an experiment is another.
    base = {"select.iteration_2.cap": 0, "likelihood.m2.loglik_other": -3.085}
    rows = [
        {"rev": "workspace", "typ": "baseline", "Created": None, **base},
        {"rev": "main", "typ": "baseline", "Created": "05:48 AM", **base},
        {
            "rev": "5bb296d",
            "typ": "branch_commit",
            "Experiment": "x",
            "select.iteration_2.cap": 4,
            "likelihood.m2.loglik_other": -3.093,
        },
    ]
    assert [r["rev"] for r in without_workspace_copy(rows)] == ["main", "5bb296d"]
    changed = [{**rows[0], "select.iteration_2.cap": 8}, *rows[1:]]  # an uncommitted run of its own stays
    assert [r["rev"] for r in without_workspace_copy(changed)] == ["workspace", "main", "5bb296d"]


def curated_rows(**extra) -> list[dict]:
    """The curated-vs-uncurated sweep as the lead queues it: the pmi baseline (seeds `default`) and two replicates,
    and `none` at equal N (top_share 0.6) and at all pairs (1.0), three seeds each."""
    arms = {
        ("pmi", 0.6): (35, [0.0060, 0.0072, 0.0055]),
        ("none", 0.6): (35, [0.0021, 0.0035, 0.0010]),
        ("none", 1.0): (63, [0.0041, 0.0052, 0.0030]),
    }
    return [
        row(
            -3.08,
            selected=n,
            **{
                "curate.method": method,
                "select.iteration_1.top_share": share,
                "select.iteration_2.top_share": share,
                "seeds.training_m1": seed,
                "seeds.training_m2": seed,
                "data.web.limit": 64,
                **extra,
            },
            metrics={"comparisons.m2_vs_m0.loglik_other.difference": v},
        )
        for (method, share), (n, values) in arms.items()
        for seed, v in zip(("default", 1, 2), values)
    ]


def _by_arm(readout) -> dict:
    return {(c["condition"], c["x"]): c for c in readout.contrasts[0].arms}


def test_each_arm_is_contrasted_with_the_reference_of_its_stratum():
    metric = "comparisons.m2_vs_m0.loglik_other.difference"
    readout = compare_runs(curated_rows(), metric=metric, contrasts=[("curate.method", "pmi")])
    assert readout.keys == ["curate.method", "select.iteration_1.top_share", "select.iteration_2.top_share"]
    contrasts = _by_arm(readout)
    # `none` at equal N and at all pairs are two arms, never one; the latter differs from pmi in the pairs' count.
    assert set(contrasts) == {(("none", "0.6", "0.6"), 35), (("none", "1", "1"), 63)}
    equal_n, all_pairs = contrasts[(("none", "0.6", "0.6"), 35)], contrasts[(("none", "1", "1"), 63)]
    assert equal_n["also"] == [] and equal_n["x_ref"] == 35
    assert all_pairs["also"] == ["select.iteration_1.top_share", "select.iteration_2.top_share"]
    ref = stats.ttest_ind([0.0021, 0.0035, 0.0010], [0.0060, 0.0072, 0.0055], equal_var=False)
    assert equal_n["ci"] == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert equal_n["df"] == pytest.approx(ref.df)
    assert equal_n["difference"] == pytest.approx(np.mean([0.0021, 0.0035, 0.0010]) - np.mean([0.006, 0.0072, 0.0055]))
    assert (equal_n["n"], equal_n["n_ref"]) == (3, 3) and not readout.contrasts[0].not_contrasted
    text = markdown(readout)
    assert "No fit: one N per condition." in text and "α" not in text
    assert f"| none | 0.6 | 0.6 | 35 | 35 | — | 3 | 3 | {equal_n['difference']:+.4g} | [" in text
    assert "(excludes 0)" in next(line for line in text.splitlines() if line.startswith("| none | 0.6 | 0.6 | 35 | 35"))


def test_a_contrast_that_would_pool_another_change_is_refused_and_strata_are_matched():
    metric = "comparisons.m2_vs_m0.loglik_other.difference"
    rows = curated_rows()
    big = curated_rows(**{"data.web.limit": 256})
    # A `none` arm on a larger web pool has no pmi arm on that pool: refused, the separating key named.
    rows.append(big[3])
    readout = compare_runs(rows, metric=metric, contrasts=[("curate.method", "pmi")])
    [(condition, n, why)] = readout.contrasts[0].not_contrasted
    assert condition == ("none", "256", "0.6", "0.6") and "`data.web.limit` (256 vs 64)" in why
    assert len(readout.contrasts[0].arms) == 2 and "### Not contrasted" not in markdown(readout)
    assert "## Not contrasted" in markdown(readout) and why in markdown(readout)
    # With a pmi arm on each pool, each `none` arm meets the reference of its own pool.
    readout = compare_runs(curated_rows() + big, metric=metric, contrasts=[("curate.method", "pmi")])
    assert not readout.contrasts[0].not_contrasted and len(readout.contrasts[0].arms) == 4
    assert all(c["condition"][1] == c["reference"][1] for c in readout.contrasts[0].arms)
    # A condition read at several N (a scaling sweep) is contrasted N by N, never against another N.
    scaling = [
        row(
            0.01 * math.log(n) + (0.002 if method == "pmi" else 0) + 0.001 * s,
            selected=n,
            **{"curate.method": method, "select.iteration_2.cap": n, "seeds.training_m2": s},
        )
        for method in ("pmi", "none")
        for n in (8, 32)
        for s in (0, 1)
    ]
    scaling.append(row(0.03, selected=16, **{"curate.method": "none", "select.iteration_2.cap": 16}))
    readout = compare_runs(scaling, metric=METRIC, contrasts=[("curate.method", "pmi")])
    assert {(c["x"], c["x_ref"]) for c in readout.contrasts[0].arms} == {(8, 8), (32, 32)}
    assert all(c["difference"] == pytest.approx(-0.002) for c in readout.contrasts[0].arms)
    [(_, n, why)] = readout.contrasts[0].not_contrasted
    assert n == 16 and "N (16 vs" in why


def test_a_two_key_grid_is_contrasted_along_each_key_the_other_held():
    """Tagging at training × system prompt at inference: the tagging contrast pairs arms at the same prompt, the
    prompt contrast arms trained the same way; the two keys are never crossed (that would pool two changes)."""
    effect = {("True", "S_a"): 0.0, ("True", "none"): -0.001, ("False", "S_a"): -0.003, ("False", "none"): -0.005}
    rows = [
        row(
            0.01 + effect[(str(tagging), prompt)] + 0.0005 * s,
            selected=35,
            **{"train.tagging": tagging, "respond.system_prompt": prompt, "seeds.training_m2": s},
        )
        for tagging in (True, False)
        for prompt in ("S_a", "none")
        for s in (0, 1, 2)
    ]
    readout = compare_runs(rows, contrasts=[("train.tagging", "True"), ("respond.system_prompt", "S_a")])
    assert readout.keys == ["train.tagging", "respond.system_prompt"]
    tagging, prompt = readout.contrasts
    assert {(c["condition"], c["reference"]) for c in tagging.arms} == {
        (("False", "S_a"), ("True", "S_a")),
        (("False", "none"), ("True", "none")),
    }
    assert {(c["condition"], c["reference"]) for c in prompt.arms} == {
        (("True", "none"), ("True", "S_a")),
        (("False", "none"), ("False", "S_a")),
    }
    assert {c["condition"]: c["difference"] for c in tagging.arms} == pytest.approx(
        {("False", "S_a"): -0.003, ("False", "none"): -0.004}
    )
    assert {c["condition"]: c["difference"] for c in prompt.arms} == pytest.approx(
        {("True", "none"): -0.001, ("False", "none"): -0.002}
    )
    text = markdown(readout)
    assert "reference arm `train.tagging` = True" in text and "reference arm `respond.system_prompt` = S_a" in text
    with pytest.raises(ValueError, match="a key named twice"):
        compare_runs(rows, contrasts=[("train.tagging", "True"), ("train.tagging", "False")])
    # The prompts read the same trained models: paired by seed, the seeds' shared spread cancels.
    both = [("train.tagging", "True"), ("respond.system_prompt", "S_a")]
    for r in rows:  # each seed's prompt effect a little different, or there is no spread to pair
        if r["params.yaml:respond.system_prompt"] == "none":
            r[f"metrics/headline.json:{METRIC}"] += 0.0001 * r["params.yaml:seeds.training_m2"] ** 2
    _, prompt = compare_runs(rows, contrasts=both, paired_keys=["respond.system_prompt"]).contrasts
    _, welch_prompt = compare_runs(rows, contrasts=both).contrasts
    for c, w in zip(prompt.arms, welch_prompt.arms):
        ci, welch_ci = c["ci"], w["ci"]
        assert (c["n"], c["df"]) == (3, 2) and c["difference"] == pytest.approx(w["difference"])
        assert ci[1] - ci[0] < (welch_ci[1] - welch_ci[0]) / 2  # the seeds' own level (0.0005 a seed) cancels
    assert "paired 95% t interval" in markdown(
        compare_runs(rows, contrasts=both, paired_keys=["respond.system_prompt"])
    )
    with pytest.raises(ValueError, match="not a --contrast key"):
        compare_runs(rows, contrasts=both[:1], paired_keys=["respond.system_prompt"])


def test_arms_read_at_one_n_are_drawn_side_by_side_not_on_top_of_each_other(monkeypatch, tmp_path):
    from humpback.storage import plotting

    drawn = {}

    def keep(fig, out):  # the figure as plot() leaves it: each condition's points
        drawn.update({bars.get_label(): bars.lines[0].get_xdata() for bars in fig.axes[0].containers})

    monkeypatch.setattr(plotting, "save_figure", keep)
    rows = [
        row(0.01 * s, selected=25, **{"train.mix": mix, "seeds.training_m2": s})
        for mix in ("augmented", "seed+augmented", "web")
        for s in (0, 1)
    ]
    plot(compare_runs(rows), tmp_path / "mix.png")
    xs = sorted(x for xdata in drawn.values() for x in xdata)
    assert len(xs) == 3 and xs[1] == pytest.approx(25) and len(set(xs)) == 3  # centred on N, apart
    assert xs[2] / xs[1] == pytest.approx(xs[1] / xs[0]) and xs[2] / xs[0] < 1.2  # evenly, and close to N


def test_a_one_run_reference_arm_says_the_interval_cannot_be_computed():
    rows = [
        r
        for r in curated_rows()
        if not (r["params.yaml:curate.method"] == "pmi" and r["params.yaml:seeds.training_m1"] != "default")
    ]
    readout = compare_runs(
        rows, metric="comparisons.m2_vs_m0.loglik_other.difference", contrasts=[("curate.method", "pmi")]
    )
    assert all(c["ci"] is None and c["n_ref"] == 1 for c in readout.contrasts[0].arms)
    text = markdown(readout)
    assert "cannot be computed: one run in the reference" in text and "| pmi | 0.6 | 0.6 | 35 |" in text


def test_a_contrast_key_must_be_a_condition_with_that_value(tmp_path, capsys):
    rows = curated_rows()
    for contrast, message in (
        (("seeds.training_m2", "1"), "a seed"),
        (("data.web.limit", "64"), "does not differ"),
        (("curate.method", "rubric"), "no run has it"),
        (("select.iteration_2.cap", "0"), "x (or sets it)"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            compare_runs(
                rows + [row(-3.0, selected=35, **{"curate.method": "pmi", "select.iteration_2.cap": 8})]
                if contrast[0].endswith("cap")
                else rows,
                contrasts=[contrast],
            )
    assert parse_contrast("select.iteration_2.top_share=1.0") == ("select.iteration_2.top_share", "1")
    assert parse_contrast("train.tagging=true") == ("train.tagging", "True")
    assert parse_contrast(" train.mix = seed+augmented") == ("train.mix", "seed+augmented")
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(rows))
    assert main(["--rows", str(rows_file), "--contrast", "curate.methd=pmi", "--out", str(tmp_path / "x")]) == 1
    assert "curate.methd" in capsys.readouterr().err and not (tmp_path / "x.md").exists()


def test_a_metric_may_be_the_difference_of_two_keys_per_run():
    metric = "likelihood.m1.loglik_other - likelihood.m0.loglik_other"
    rows = [
        row(
            selected=35,
            **{"seeds.training_m1": s},
            metrics={"likelihood.m1.loglik_other": m1, "likelihood.m0.loglik_other": m0},
        )
        for s, (m1, m0) in enumerate([(-3.080, -3.090), (-3.070, -3.095), (-3.085, -3.088)])
    ]
    rows.append(row(selected=35, metrics={"likelihood.m1.loglik_other": -3.08}))
    readout = compare_runs(rows, metric=metric)
    mean, lo, hi, n = readout.conditions[("all",)]["by_x"][35]
    assert n == 3 and mean == pytest.approx(np.mean([0.010, 0.025, 0.003]))  # per run, then averaged
    assert (lo, hi) == pytest.approx(stats.t.interval(0.95, 2, loc=mean, scale=stats.sem([0.010, 0.025, 0.003])))
    assert [reason for _, reason in readout.not_read] == ["no likelihood.m0.loglik_other"]
    assert "the difference of two keys, `likelihood.m1.loglik_other` − `likelihood.m0.loglik_other`" in markdown(
        readout
    )
    with pytest.raises(ValueError, match="difference of two keys"):
        compare_runs(rows, metric="a - b - c")


def test_the_paper_preset_reads_every_metric_with_its_contrast(tmp_path):
    rng = random.Random(0)
    keys = {k for _, spec in PRESETS["paper"] for k in spec.split(" - ")}
    rows = [
        row(
            selected=35,
            **{"train.mix": mix, "seeds.training_m1": s, "seeds.training_m2": s},
            metrics={k: rng.gauss(-3.0 if k.startswith("likelihood") else 0.0, 0.01) for k in keys},
        )
        for mix in ("seed+augmented", "augmented")
        for s in ("default", 1, 2)
    ]
    # Kept by two queue runs, each file listing the baseline: read as one, the baseline once.
    first, second = tmp_path / "mix.1.json", tmp_path / "mix.2.json"
    first.write_text(json.dumps({"source": "synthetic", "rows": rows[:4]}))
    second.write_text(json.dumps([rows[0], *rows[4:]]))
    out, kept = tmp_path / "mix", tmp_path / "mix.runs.json"
    assert (
        main(
            ["--rows", str(first), "--rows", str(second)]
            + cli_args(keep=kept, contrast="train.mix=seed+augmented", metrics="paper", out=out)
        )
        == 0
    )
    text = out.with_suffix(".md").read_text()
    assert json.loads(kept.read_text())["rows"] == rows
    assert (
        main(cli_args(rows=kept, contrast="train.mix=seed+augmented", metrics="paper", out=tmp_path / "again")) == 0
        and (tmp_path / "again.md").read_text() == text
    )
    sections = text.split("\n## ")[1:]
    assert [s.split(":")[0] for s in sections] == [label for label, _ in PRESETS["paper"]]
    for section, (_, spec) in zip(sections, PRESETS["paper"]):
        values = {
            mix: [
                r[f"metrics/headline.json:{spec.split(' - ')[0]}"]
                - (r[f"metrics/headline.json:{spec.split(' - ')[1]}"] if " - " in spec else 0)
                for r in rows
                if r["params.yaml:train.mix"] == mix
            ]
            for mix in ("augmented", "seed+augmented")
        }
        ref = welch(values["augmented"], values["seed+augmented"])
        assert "No fit: one N per condition." in section and "6 runs read, 0 not read" in section
        assert f"| augmented | 35 | 35 | — | 3 | 3 | {ref['difference']:+.4g} | [{ref['ci'][0]:+.4g}, " in section
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
