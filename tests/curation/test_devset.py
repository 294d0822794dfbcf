"""The curation dev set: its kinds and labels, determinism, no overlap with training data, and curator metrics."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from humpback.curation.devset import (
    KINDS,
    DevSetError,
    build_dev_set,
    curation_metrics,
    forum_reply,
    navigation_boilerplate,
    truncate_mid_sentence,
)
from humpback.storage.records import read_json, read_jsonl, write_jsonl
from tests.conftest import cli_args, curation_quality_args, report_args, score_dev_args, write_dag_metrics

FIXTURES = Path(__file__).parents[1] / "fixtures" / "tiny_profile"


def _pairs() -> list[dict]:
    lines = (FIXTURES / "seed.jsonl").read_text().splitlines()
    return [{**json.loads(line), "id": f"faq-{i:03d}", "source": "fixture"} for i, line in enumerate(lines)]


def _web() -> list[dict]:
    lines = (FIXTURES / "web.jsonl").read_text().splitlines()
    return [
        {**json.loads(line), "id": f"web-{i}", "header": f"Section {i}", "doc": "x.html"}
        for i, line in enumerate(lines)
    ]


def _split() -> tuple[list[dict], list[dict]]:
    pairs = _pairs()
    return pairs[:8], pairs[8:]  # (training seed, held-out)


def test_rows_have_contract_fields_kinds_and_labels():
    _, heldout = _split()
    rows = build_dev_set(heldout, _web(), positives=4, negatives_per_kind=3, seed=0)
    assert [r["kind"] for r in rows].count("good") == 4
    for kind in KINDS[1:]:
        assert [r["kind"] for r in rows].count(kind) == 3
    for r in rows:
        assert set(r) >= {"id", "instruction", "output", "label", "kind"}
        assert r["label"] == (1 if r["kind"] == "good" else 0)
        assert r["output"].strip()
    assert len({r["id"] for r in rows}) == len(rows)


def test_deterministic_with_seed_and_independent_of_input_order():
    _, heldout = _split()
    a = build_dev_set(heldout, _web(), 4, 2, seed=0)
    b = build_dev_set(list(reversed(heldout)), list(reversed(_web())), 4, 2, seed=0)
    c = build_dev_set(heldout, _web(), 4, 2, seed=1)
    assert a == b
    assert a != c


def test_dev_set_never_overlaps_training_seed():
    train, heldout = _split()
    rows = build_dev_set(heldout, _web(), positives=4, negatives_per_kind=4, seed=0)
    train_ids = {r["id"] for r in train}
    train_texts = {r["instruction"] for r in train} | {r["output"] for r in train}
    heldout_ids = {r["id"] for r in heldout}
    for r in rows:
        assert r["id"] not in train_ids
        assert r["source_id"] in heldout_ids
        assert r["instruction"] not in train_texts
        assert r["output"] not in train_texts
        # no training answer leaks in as a fragment either (forum replies quote their own answer only)
        for text in train_texts:
            assert text[:80] not in r["output"]


def test_negative_kinds_look_like_what_they_claim():
    rng = random.Random(0)
    answer = (
        "The canonical way to share information across modules is to create a special module. "
        "Just import the config module in all modules of your application. Then it is available everywhere."
    )
    cut = truncate_mid_sentence(answer, rng)
    assert answer.startswith(cut) and 0.15 * len(answer) < len(cut) < 0.36 * len(answer)
    assert cut[-1] not in ".!?"
    nav = navigation_boilerplate(["Module index", "Glossary"], rng)
    assert "Next topic" in nav and "\u00a9" in nav and ("Module index" in nav or "Glossary" in nav)
    forum = forum_reply(answer, rng)
    assert "Edit" in forum or "EDIT" in forum
    assert any(s.rstrip(".")[1:60] in forum for s in answer.split(". "))


def test_mismatched_answer_belongs_to_another_question():
    _, heldout = _split()
    answers = {r["id"]: r["output"] for r in heldout}
    rows = build_dev_set(heldout, _web(), positives=1, negatives_per_kind=4, seed=3)
    for r in rows:
        if r["kind"] == "mismatched":
            assert r["output"] != answers[r["source_id"]]
            assert r["output"] in answers.values()


def test_too_few_heldout_pairs_is_a_clear_error():
    with pytest.raises(DevSetError, match="heldout"):
        build_dev_set([], _web(), 1, 1, seed=0)
    with pytest.raises(DevSetError, match="at least 2"):
        build_dev_set(_pairs()[:1], _web(), 1, 1, seed=0)


def test_prepare_dev_stage_writes_rows_and_counts(tmp_path):
    from stages.prepare_dev import main

    _, heldout = _split()
    write_jsonl(tmp_path / "heldout.jsonl", heldout)
    write_jsonl(tmp_path / "web.jsonl", _web())
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    raw["curation_quality"].update(positives=3, negatives_per_kind=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    rc = main(
        cli_args(
            heldout=tmp_path / "heldout.jsonl",
            web=tmp_path / "web.jsonl",
            out=tmp_path / "dev.jsonl",
            metrics=tmp_path / "m.json",
            params=tmp_path / "params.yaml",
        )
    )
    assert rc == 0
    rows = read_jsonl(tmp_path / "dev.jsonl")
    metrics = read_json(tmp_path / "m.json")
    assert metrics["read"] == metrics["kept"] + sum(metrics["dropped"].values()) == len(heldout)
    assert metrics["by_kind"] == {"good": 3, "mismatched": 2, "truncated": 2, "navigation": 2, "forum": 2}
    assert metrics["rows"] == len(rows) == 11


# --------------------------------------------------------------------------------------------- metrics


def test_curation_metrics_on_known_scores():
    labels = [1, 1, 1, 0, 0, 0, 0]
    kinds = ["good", "good", "good", "mismatched", "truncated", "navigation", "forum"]
    scores = [4.8, 4.1, 2.0, 4.5, 1.5, None, 3.0]
    selected = [s is not None and s >= 4.0 for s in scores]
    lengths = [100, 200, 300, 400, 50, 60, 70]
    m = curation_metrics(labels, kinds, scores, selected, lengths)
    # selected: 4.8 (pos), 4.1 (pos), 4.5 (neg) → precision 2/3, recall 2/3
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    # AUC by hand, positives vs negatives {4.5, 1.5, unparsed = lowest, 3.0}:
    # 4.8 beats 4, 4.1 beats 3, 2.0 beats 2 → 9 of 12 pairs
    assert m["roc_auc"] == pytest.approx(9 / 12)
    # lengths: 100 beats 50,60,70 (3); 200 beats 3; 300 beats 3 → 9 / 12
    assert m["length_roc_auc"] == pytest.approx(9 / 12)
    assert m["unparsed"] == 1
    assert m["n"] == 7 and m["n_positive"] == 3 and m["n_selected"] == 3
    assert m["by_kind"]["good"]["mean_score"] == pytest.approx((4.8 + 4.1 + 2.0) / 3)
    assert m["by_kind"]["navigation"]["mean_score"] is None


def test_curation_metrics_degenerate_cases():
    m = curation_metrics([1, 1], ["good", "good"], [None, None], [False, False], [1, 2])
    assert m["precision"] is None  # nothing selected
    assert m["recall"] == 0.0
    assert m["roc_auc"] is None  # one class only


def test_dev_set_from_prepare_seed_split_is_disjoint_from_training():
    """With the real seed importer's held-out split (the tiny profile's jsonl source)."""
    import yaml

    from humpback.params import parse_params
    from humpback.sources import prepare_seed

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    raw["data"]["seed"].update(source="jsonl", path=str(FIXTURES / "seed.jsonl"), heldout=4, limit=0)
    params = parse_params(raw)
    train, heldout, _ = prepare_seed(params.data.seed, params.seeds.sampling)
    rows = build_dev_set(heldout, _web(), positives=4, negatives_per_kind=2)
    train_texts = {r["instruction"] for r in train} | {r["output"] for r in train}
    assert not {r["id"] for r in rows} & {r["id"] for r in train}
    assert not {r["source_id"] for r in rows} & {r["id"] for r in train}
    assert not ({r["instruction"] for r in rows} | {r["output"] for r in rows}) & train_texts


def _logprob_params():
    """The shipped params with curate.method logprob at threshold 3.0 (the tests' fixed point, whatever the
    shipped default method is)."""
    import dataclasses

    from humpback.params import load_params

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    threshold = dataclasses.replace(params.curate.threshold, logprob=3.0)
    return dataclasses.replace(params, curate=dataclasses.replace(params.curate, method="logprob", threshold=threshold))


def rate_dev_set(engine, rows, params):
    """score_dev's reads, then curation_quality's metrics: the two stages' library calls in order."""
    from humpback.curation.curator import score_dev_set
    from humpback.curation.quality import curation_quality_metrics

    scored = score_dev_set(engine, rows, params, tagging=params.train.tagging)
    return scored, curation_quality_metrics(scored, params)


def _fake_scoring(monkeypatch, by_kind: dict[str, float | None]):
    """Replace the curator's scores (scoring.score_pairs) by fixed scores per dev-row kind; the real
    PairScore and is_selected stay, so the stage's selection is the curate stage's."""
    from humpback.curation import scoring

    real = scoring.score_pairs

    def score_pairs(engine, pairs, params, tagging, seed, method=None, desc=""):
        if method == "length":
            return real(engine, pairs, params, tagging, seed, method=method)
        engine = getattr(engine, "_engine", engine)  # the real engine behind curation_quality's ReadOnce
        engine.seen = (len(pairs), tagging, seed)
        engine.methods = getattr(engine, "methods", []) + [method]
        return [scoring.PairScore(by_kind[p["kind"]], None, None, None, by_kind[p["kind"]] is not None) for p in pairs]

    monkeypatch.setattr(scoring, "score_pairs", score_pairs)


def test_curation_quality_stage_reports_the_papers_table(tmp_path, monkeypatch):
    _fake_scoring(monkeypatch, {"good": 4.6, "mismatched": 1.2, "truncated": 3.4, "navigation": None, "forum": 3.1})
    _, heldout = _split()
    rows = build_dev_set(heldout, _web(), positives=4, negatives_per_kind=2, seed=0)
    params = _logprob_params()  # threshold 3.0
    engine = type("Engine", (), {})()
    scored, metrics = rate_dev_set(engine, rows, params)
    assert engine.seen == (len(rows), params.train.tagging, params.seeds.generation)
    assert len(scored) == len(rows) and all({"by_method", "label"} <= set(r) for r in scored)
    # selected at 3.0: 4 good + 2 truncated + 2 forum → precision 4/8, recall 1
    assert metrics["precision"] == pytest.approx(0.5) and metrics["recall"] == 1.0
    assert metrics["roc_auc"] == 1.0  # every good pair outscores every negative
    assert metrics["unparsed"] == 2
    assert metrics["by_kind"]["truncated"]["mean_score"] == pytest.approx(3.4)
    assert metrics["sweep"]["4.0"] == {"precision": 1.0, "recall": 1.0, "n_selected": 4}
    # every method in one run, the configured one first after the length baseline, each with an interval
    assert engine.methods == [params.curate.method] + [
        m for m in params.curation_quality.methods if m != params.curate.method
    ]
    assert list(metrics["methods"]) == ["length", *engine.methods]
    lo, hi = metrics["roc_auc_ci"]
    assert lo <= metrics["roc_auc"] <= hi
    length = metrics["methods"]["length"]
    assert length["precision"] is None and length["threshold"] is None
    assert length["roc_auc"] == pytest.approx(metrics["length_roc_auc"])
    assert all(r["by_method"].keys() == metrics["methods"].keys() for r in scored)
    # each method is selected at its own threshold: likelihood_gain's 0.1 keeps every parsed row
    assert metrics["methods"]["likelihood_gain"]["n_selected"] == len(rows) - 2


def test_report_table_and_plot(tmp_path, monkeypatch):
    from humpback.curation.quality import markdown_table, plot_curation_quality

    _fake_scoring(monkeypatch, {"good": 4.6, "mismatched": 1.2, "truncated": 3.4, "navigation": None, "forum": 3.1})
    _, heldout = _split()
    rows = build_dev_set(heldout, _web(), positives=4, negatives_per_kind=2, seed=0)
    params = _logprob_params()
    _, metrics = rate_dev_set(type("Engine", (), {})(), rows, params)
    table = markdown_table({"m0": metrics, "m1": metrics})
    assert len(table) == 2 + 2 * len(metrics["methods"])
    assert any("| m1 | **logprob** | 1.00 [1.00, 1.00] |" in line for line in table)
    plot_curation_quality({"m0": metrics, "m1": metrics}, tmp_path / "cq.png")
    assert (tmp_path / "cq.png").read_bytes()[:4] == b"\x89PNG"


def test_score_dev_then_curation_quality_on_tiny_model(tmp_path, tiny_model_dir):
    """Both stages end to end with the real scoring code and transformers engine (untrained model: only the
    plumbing and the metrics' shape are checked, not their values)."""
    from stages.curation_quality import main
    from stages.score_dev import main as score_main

    _, heldout = _split()
    write_jsonl(tmp_path / "dev.jsonl", build_dev_set(heldout, _web(), 2, 1, seed=0))
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    raw["curate"].update(method="logprob", max_new_tokens=4)  # generate: a random model's text, short
    raw["curation_quality"]["bootstrap"] = 50
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    rc = score_main(score_dev_args(tmp_path, tiny_model_dir, tmp_path / "params.yaml", tagged=True))
    assert rc == 0
    rc = main(curation_quality_args(tmp_path, "m0", tmp_path / "params.yaml"))
    assert rc == 0
    metrics = read_json(tmp_path / "m.json")
    assert {
        "precision",
        "recall",
        "roc_auc",
        "roc_auc_ci",
        "length_roc_auc",
        "n",
        "by_kind",
        "sweep",
        "methods",
    } <= set(metrics)
    assert metrics["n"] == 6 and metrics["unparsed"] == 0 and 0.0 <= metrics["roc_auc"] <= 1.0
    # the length baseline, the configured curate.method, then the dev set's own methods
    assert set(metrics["methods"]) == {"length", "logprob", *raw["curation_quality"]["methods"]}
    for method, m in metrics["methods"].items():
        assert m["n"] == 6 and set(m["by_kind"]) <= {"good", "mismatched", "truncated", "navigation", "forum"}
        assert method == "generate" or m["unparsed"] == 0
    scored = read_jsonl(tmp_path / "scored.jsonl")
    assert all(1.0 <= r["by_method"]["logprob"]["score"] <= 5.0 for r in scored)
    assert (tmp_path / "m.png").is_file()


def test_curation_quality_skips_the_named_curator_when_curate_model_is_self(tmp_path):
    from humpback.engines.model_folders import prepare_curator
    from stages.curation_quality import main
    from stages.score_dev import main as score_main

    prepare_curator("self", "float32", tmp_path / "curator")
    _, heldout = _split()
    write_jsonl(tmp_path / "dev.jsonl", build_dev_set(heldout, _web(), 2, 1))
    params = str(Path(__file__).resolve().parents[2] / "params.yaml")
    rc = score_main(score_dev_args(tmp_path, tmp_path / "curator", params))
    assert rc == 0 and read_jsonl(tmp_path / "scored.jsonl") == []
    rc = main(curation_quality_args(tmp_path, "curator", params))
    assert rc == 0 and "skipped" in read_json(tmp_path / "m.json")
    assert (tmp_path / "m.png").is_file()


def test_report_stage_shows_every_curator_and_method(tmp_path, monkeypatch):
    from humpback.storage.records import write_json
    from stages.report import main

    _fake_scoring(monkeypatch, {"good": 4.6, "mismatched": 1.2, "truncated": 3.4, "navigation": 2.0, "forum": 3.1})
    _, heldout = _split()
    rows = build_dev_set(heldout, _web(), positives=4, negatives_per_kind=2, seed=0)
    _, metrics = rate_dev_set(type("Engine", (), {})(), rows, _logprob_params())
    write_dag_metrics(tmp_path / "metrics", curators=())
    folder = tmp_path / "metrics" / "curation_quality"
    for name in ("base", "m0"):
        write_json(folder / f"{name}.json", {"model": name, **metrics})
    write_json(folder / "curator.json", {"model": "curator", "skipped": "curate.model is self"})
    assert main(report_args(tmp_path, tmp_path / "metrics")) == 0
    text = (tmp_path / "report.md").read_text()
    assert "### Every method × curator" in text and "| base | **logprob** |" in text and "| m0 | pmi |" in text
    assert set(read_json(tmp_path / "headline.json")["curator_roc_auc"]) == {"base", "m0"}  # skipped: no column
    assert (tmp_path / "cq.png").read_bytes()[:4] == b"\x89PNG"


def test_read_once_runs_each_read_once_and_returns_the_same_rows():
    from humpback.curation.curator import ReadOnce

    class Counting:
        tokenizer = "tok"

        def __init__(self):
            self.calls = []

        def next_token_logprobs(self, prompts, candidates, **_):
            self.calls.append(("next", list(prompts)))
            return [[float(len(p)), -1.0] for p in prompts]

        def completion_logprobs(self, prompts, completions, **_):
            self.calls.append(("completion", list(prompts)))
            return [[float(len(c))] for c in completions]

    inner = Counting()
    engine = ReadOnce(inner)
    first = engine.next_token_logprobs(["a", "bb"], ["1", "2"])
    again = engine.next_token_logprobs(["bb", "ccc"], ["1", "2"])
    assert first == [[1.0, -1.0], [2.0, -1.0]] and again == [[2.0, -1.0], [3.0, -1.0]]
    assert inner.calls == [("next", ["a", "bb"]), ("next", ["ccc"])]
    engine.next_token_logprobs(["a"], ["Yes", "No"])  # other candidates: a new read
    assert engine.completion_logprobs(["p", "p"], ["x", "yy"]) == [[1.0], [2.0]]
    assert engine.completion_logprobs(["p"], ["yy"]) == [[2.0]]
    assert [c[0] for c in inner.calls] == ["next", "next", "next", "completion"]
    assert engine.tokenizer == "tok"
