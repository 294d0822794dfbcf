"""What a user watching a long stage sees on stderr: a progress bar on score_dev and on the default evaluate
judge (a minute each on the default run, hours at 805 prompts), and a time on every log line."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import yaml

from humpback.curation.devset import build_dev_set
from humpback.engines.factory import engine_settings
from humpback.evaluation.head_to_head import evaluate_models
from humpback.evaluation.judges import make_judge
from humpback.params import load_params
from humpback.stage_runner import stage
from humpback.storage.records import write_jsonl
from stages.score_dev import main as score_dev
from tests.conftest import score_dev_args
from tests.curation.test_devset import _split, _web
from tests.evaluation.test_evaluation import _data

REPO = Path(__file__).resolve().parents[2]


def test_score_dev_draws_a_progress_bar_per_method(tmp_path, tiny_model_dir, capsys):
    _, heldout = _split()
    write_jsonl(tmp_path / "dev.jsonl", build_dev_set(heldout, _web(), 2, 1, seed=0))  # 6 rows
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["curate"]["method"] = "logprob"
    raw["curation_quality"]["methods"] = ["pmi"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert score_dev(score_dev_args(tmp_path, tiny_model_dir, tmp_path / "params.yaml")) == 0
    err = capsys.readouterr().err
    # every read of the engine: logprob one per row, pmi two (the answer with and without its instruction)
    for method, reads in (("logprob", 6), ("pmi", 12)):
        assert re.search(rf"score_dev {method}: 100%.* {reads}/{reads} ", err), err[-2000:]


def test_the_default_judge_draws_a_progress_bar(tmp_path, tiny_model_dir, capsys):
    params = load_params(REPO / "params.yaml")  # its evaluate section: the default judge
    judge_engine = engine_settings(params.generation, params.runtime)
    judge, _ = make_judge(params.evaluate, judge_engine, tiny_model_dir, cache_root=tmp_path)
    reference, model = _data(3)
    evaluate_models(judge, {"m1": model}, reference, max_chars=200)
    err = capsys.readouterr().err
    # pmi reads each of 3 model and 3 reference answers with and without its instruction
    assert re.search(r"judge: 100%.* 12/12 ", err), err[-2000:]


def test_stage_log_lines_carry_the_time(capsys, monkeypatch):
    root = logging.getLogger()
    level = root.level
    monkeypatch.setattr(root, "handlers", [])  # as in a stage process: pytest's capture handlers set aside
    try:
        main = stage(
            "demo",
            "A stage that logs one line.",
            lambda parser: None,
            lambda args, params: logging.getLogger("demo").info("halfway"),
        )
        assert main(["--params", str(REPO / "params.yaml")]) == 0
    finally:
        root.setLevel(level)
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "halfway" in line]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d demo: halfway", line), line
