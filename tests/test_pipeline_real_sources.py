"""The stages the paper's kinds of data change, under `dvc repro`: a WARC crawl, oasst1 and AlpacaEval.

Same tiny profile as tests/test_pipeline.py, with `data.web.source: warc`, `data.seed.source: oasst1` and
`data.eval.source: alpaca-eval` pointing at the real-format fixtures. Only the stages a source changes run
(the rest of the DAG is tests/test_pipeline.py's); their params reads are checked under this profile too.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from tests.conftest import build_tiny_model
from tests.test_pipeline import ROOT, _dvc, _ran, _run, _tiny_profile, params_mismatches, recorded_reads

SOURCE_STAGES = {"prepare_seed", "prepare_web", "sample_web", "prepare_eval"}

REAL = ROOT / "tests" / "fixtures" / "real_formats"

pytestmark = pytest.mark.slow


def test_dag_runs_on_warc_oasst1_and_alpaca_eval(tmp_path):
    dest = tmp_path / "repo"
    files = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).split("\n")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    raw = _tiny_profile(yaml.safe_load((dest / "params.yaml").read_text()), build_tiny_model(tmp_path / "tiny"))
    raw["data"]["seed"].update(source="oasst1", path=str(REAL / "oasst1.parquet"), language="en")
    raw["data"]["web"].update(source="warc", path=str(REAL / "web.warc.gz"))
    raw["runtime"]["web_shard_size"] = 4
    raw["data"]["eval"].update(source="alpaca-eval", path=str(REAL / "alpaca_eval.json"), reference="none")
    (dest / "params.yaml").write_text(yaml.safe_dump(raw))
    _run(["git", "init", "-q", "-b", "main"], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "real sources"], dest)

    reads = tmp_path / "reads.jsonl"
    assert _ran(_dvc("repro", *sorted(SOURCE_STAGES), cwd=dest, HUMPBACK_PARAMS_READS=str(reads))) == SOURCE_STAGES
    assert not params_mismatches(recorded_reads(reads))
    metrics = {
        name: json.loads((dest / "metrics" / f"{name}.json").read_text())
        for name in ("prepare_seed", "prepare_web", "prepare_eval")
    }
    for m in metrics.values():
        assert m["read"] == m["kept"] + sum(m["dropped"].values())
    assert metrics["prepare_seed"]["source"] == "oasst1" and metrics["prepare_seed"]["kept"] == 12
    assert metrics["prepare_web"]["source"] == "warc" and metrics["prepare_web"]["kept"] == 20  # the whole pool
    assert metrics["prepare_web"]["dropped"]["near_duplicate"] == 2
    assert metrics["prepare_eval"]["kept"] == 5
    web = [json.loads(line) for line in (dest / "data" / "web.jsonl").read_text().splitlines()]
    assert all(r["id"].startswith("warc/https://") for r in web)
    assert not list(dest.glob(".humpback/scratch/prepare_web-*")), "prepare_web leaves no scratch behind"
