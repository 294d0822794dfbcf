"""The report's account of iteration 2: M2 − M1 beside M2 − M0, and whether M1's re-rating changed the selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from humpback.storage.records import read_json, write_json, write_jsonl
from stages.report import main
from tests.conftest import report_args, write_dag_metrics

EXPECTED = Path(__file__).parents[1] / "fixtures" / "report"


def _likelihood(tmp_path, name: str, other: list[float]) -> str:
    items = [{"id": f"q{i}", "logprob": v} for i, v in enumerate(other)]
    path = tmp_path / "likelihood" / f"{name}.json"
    write_json(
        path,
        {
            "model": name,
            "instruments": {"loglik_other": {"n": len(other), "mean": sum(other) / len(other), "items": items}},
        },
    )
    return str(path)


def _report(tmp_path, overlap: dict, scored: list[str] = ()) -> tuple[str, dict, dict]:
    metrics = tmp_path / "metrics"
    write_dag_metrics(metrics)
    write_json(metrics / "select" / "1.json", {"n": 10, "selected": 4})
    write_json(metrics / "select" / "2.json", {"n": 10, "selected": 4, "overlap_with_previous": overlap})
    files = [
        _likelihood(tmp_path, "m0", [-2.0, -2.5, -3.0, -1.5]),
        _likelihood(tmp_path, "m1", [-1.9, -2.4, -2.9, -1.4]),
        _likelihood(tmp_path, "m2", [-1.8, -2.3, -2.8, -1.3]),
    ]
    assert main(report_args(tmp_path, metrics, likelihood=files, scored=scored)) == 0
    return (
        (tmp_path / "report.md").read_text(),
        read_json(tmp_path / "headline.json"),
        read_json(tmp_path / "comparisons.json"),
    )


def test_report_says_when_iteration_2_selected_the_same_pairs(tmp_path):
    text, headline, _ = _report(
        tmp_path, {"shared": 4, "only_this": 0, "only_previous": 0, "jaccard": 1.0, "identical": True}
    )
    assert "**Iteration 2 changed nothing**" in text and "exactly iteration 1's 4 pairs" in text
    assert headline["selected"] == {"iteration_1": 4, "iteration_2": 4, "shared": 4}


def test_report_leads_with_m2_against_m1_and_the_selections_overlap(tmp_path):
    text, headline, compared = _report(
        tmp_path, {"shared": 3, "only_this": 1, "only_previous": 1, "jaccard": 0.6, "identical": False}
    )
    assert "changed nothing" not in text
    assert "3 pairs kept by both curators, 1 new from M1's rating, 1 of M0's dropped (Jaccard 0.60)" in text
    assert "Does M2 beat M1 on other-source human answers (a source the pipeline never reads)? **yes**" in text
    m2_m1 = compared["m2_vs_m1"]["loglik_other"]
    assert abs(m2_m1["difference"] - 0.1) < 1e-9 and m2_m1["ci_low"] > 0 and m2_m1["n"] == 4
    # the headline carries M2's comparisons as difference and interval; M1 − M0 and n stay in comparisons.json
    assert headline["comparisons"]["m2_vs_m1"]["loglik_other"] == {
        k: m2_m1[k] for k in ("difference", "ci_low", "ci_high")
    }
    assert set(headline["comparisons"]) == {"m2_vs_m0", "m2_vs_m1"} and "m1_vs_m0" in compared


def test_report_says_how_alike_the_two_curators_rank_the_pairs(tmp_path):
    """score@1 and score@2 over the same pairs: M1 keeps M0's order exactly (rho 1) though every score moved;
    a pair only one curator scored (unparsed) is left out of the n."""
    m0 = [{"id": f"p{i}", "score": float(i)} for i in range(6)]
    m1 = [{"id": f"p{i}", "score": 3.0 * i + 2.0} for i in range(5)] + [{"id": "p5", "score": None}]
    for name, rows in (("1", m0), ("2", m1)):
        write_jsonl(tmp_path / "curated" / name / "scored.jsonl", rows)
    scored = [str(tmp_path / "curated" / n / "scored.jsonl") for n in ("1", "2")]
    text, headline, _ = _report(
        tmp_path, {"shared": 3, "only_this": 0, "only_previous": 0, "jaccard": 1.0, "identical": True}, scored
    )
    assert "M1 ranks the pairs as M0 did to Spearman's rho 1.000 over 5 pairs" in text
    assert "**Iteration 2 changed nothing**" in text and "rank_agreement" not in str(headline)
    write_jsonl(tmp_path / "curated" / "2" / "scored.jsonl", [{"id": f"p{i}", "score": -float(i)} for i in range(6)])
    text, _, _ = _report(
        tmp_path, {"shared": 3, "only_this": 0, "only_previous": 0, "jaccard": 1.0, "identical": True}, scored
    )
    assert "Spearman's rho -1.000 over 6 pairs" in text


def _every_section(tmp_path) -> list[str]:
    """A run whose metrics fill every section of the report: both likelihood instruments, the evaluation prompts
    and the in-domain questions head to head, a length-controlled reason, a skipped curator, the curators' ranks."""
    metrics = tmp_path / "metrics"
    write_dag_metrics(metrics)
    h2h = {
        "m2_vs_m0": {"difference": 12.5, "ci_low": -6.0, "ci_high": 31.0, "n": 16},
        "m1_vs_m0": {"difference": 2.5, "ci_low": -17.5, "ci_high": 22.5, "n": 16},
        "m2_vs_m1": {"difference": -1.25, "ci_low": -20.0, "ci_high": 18.75, "n": 16},
    }
    evaluate = read_json(metrics / "evaluate.json")
    evaluate.update(
        length_controlled_reason="alpaca_eval's length-controlled fit needs its reference's cache.",
        head_to_head=h2h,
        indomain={
            "reference": "human answers (held-out seed pairs)",
            "models": {m: {"win_rate": w, "standard_error": 9.5, "n": 20} for m, w in (("m0", 35.0), ("m2", 41.25))},
            "head_to_head": {"m2_vs_m0": {"difference": 5.0, "ci_low": -15.0, "ci_high": 25.0, "n": 20}},
        },
    )
    write_json(metrics / "evaluate.json", evaluate)
    files = []
    for i, name in enumerate(("base", "m0", "m1", "m2")):
        items = {
            inst: [
                {"id": f"q{q}", "logprob": -2.0 + 0.01 * i * shift + 0.03 * ((q * 7) % 5) + 0.002 * ((q * 13 + i) % 11)}
                for q in range(n)
            ]
            for inst, n, shift in (("loglik_other", 12, 1.0), ("loglik_seed", 6, -0.5))
        }
        path = tmp_path / "likelihood" / f"{name}.json"
        instruments = {
            inst: {"n": len(rows), "mean": sum(r["logprob"] for r in rows) / len(rows), "items": rows}
            for inst, rows in items.items()
        }
        write_json(path, {"model": name, "instruments": instruments})
        files.append(str(path))
    scored = []
    for iteration, scale in (("1", 1.0), ("2", 2.0)):
        rows = [{"id": f"p{i}", "score": scale * ((i * 5) % 7)} for i in range(7)]
        write_jsonl(tmp_path / "curated" / iteration / "scored.jsonl", rows)
        scored.append(str(tmp_path / "curated" / iteration / "scored.jsonl"))
    return report_args(tmp_path, metrics, curation_data="curation_quality.csv", likelihood=files, scored=scored)


@pytest.mark.parametrize("name", ["report.md", "headline.json", "comparisons.json", "curation_quality.csv"])
def test_every_section_renders_as_committed(tmp_path, name):
    """The report's outputs for a run that fills every section, byte for byte as committed in
    tests/fixtures/report/ (written by the report before it was split into one function per section)."""
    assert main(_every_section(tmp_path)) == 0
    assert (tmp_path / name).read_bytes() == (EXPECTED / name).read_bytes()


def test_a_missing_metrics_file_is_named(tmp_path, capsys):
    """dvc.yaml makes every stage's metrics a dependency of the report: a missing one is an error naming the
    file, never a silently shorter report."""
    args = _every_section(tmp_path)
    (tmp_path / "metrics" / "train" / "m1.json").unlink()
    assert main(args) == 1
    assert "train/m1.json" in capsys.readouterr().err
    assert not (tmp_path / "report.md").exists()
