"""The whole DAG under `dvc repro`, on a tiny profile, in a temporary copy of the repository.

Checks what users rely on: every stage runs; a second `dvc repro` runs nothing; changing
`curate.threshold` reruns only what is downstream of curation; and `dvc push` to a local remote followed
by `dvc pull` in a fresh clone restores every output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "tiny_profile"

ALL_STAGES = {
    "prepare_base", "prepare_curator", "prepare_seed", "prepare_web", "prepare_eval", "prepare_dev",
    "train@backward", "train@m0", "train@m1", "train@m2", "augment", "curate@1", "curate@2",
    "respond@base", "respond@m0", "respond@m1", "respond@m2", "evaluate",
    "curation_quality@base", "curation_quality@m0", "curation_quality@m1", "curation_quality@curator", "report",
}
# Stages that cannot depend on curate.threshold: everything upstream of, or beside, curation.
UPSTREAM_OF_CURATION = {
    "prepare_base", "prepare_curator", "prepare_seed", "prepare_web", "prepare_eval", "prepare_dev",
    "train@backward", "train@m0", "augment", "respond@base", "respond@m0",
}

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # `python` in dvc.yaml must be this interpreter (the project's venv).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.com"
    return env


def _run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout + proc.stderr


def _dvc(*args: str, cwd: Path) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _tiny_profile(raw: dict, model_dir: Path) -> dict:
    raw["base"]["model"] = str(model_dir)
    raw["data"]["seed"].update(source="jsonl", path=str(FIXTURES / "seed.jsonl"), heldout=3, limit=0)
    raw["data"]["web"].update(source="jsonl", path=str(FIXTURES / "web.jsonl"), min_chars=100, max_chars=3000, limit=20)
    raw["data"]["eval"].update(source="jsonl", path=str(FIXTURES / "eval.jsonl"), limit=5)
    raw["train"].update(epochs=0.2, batch_size=2, micro_batch_size=2, max_seq_len=192, save_steps=1,
                        backward_max_output_tokens=128)
    # A random tiny model writes no text that looks like an instruction; keep only the emptiness filter.
    raw["augment"].update(max_new_tokens=12, shard_size=8, filters=["empty"])
    raw["curate"].update(max_new_tokens=12, shard_size=8)
    # A random tiny model's scores mean nothing: keep every pair so m1 and m2 still train on augmented data.
    raw["curate"]["threshold"].update(logprob=1.0, generate=1.0, rubric_calibrated=-1e9, yes_no=0.0,
                                      likelihood_gain=-1e9, pmi=-1e9)
    raw["respond"].update(max_new_tokens=12)
    raw["evaluate"].update(max_chars=300)
    raw["curation_quality"].update(positives=3, negatives_per_kind=1, bootstrap=100)
    return raw


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git+DVC copy of the working tree with the tiny profile, `dvc repro` already run once."""
    work = tmp_path_factory.mktemp("pipeline")
    dest = work / "repo"
    files = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).split("\n")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    model_dir = build_tiny_model(work / "tiny-base")
    params_path = dest / "params.yaml"
    params_path.write_text(yaml.safe_dump(_tiny_profile(yaml.safe_load(params_path.read_text()), model_dir)))
    _run(["git", "init", "-q", "-b", "main"], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "tiny profile"], dest)
    first = _dvc("repro", cwd=dest)
    (work / "first_repro.log").write_text(first)
    return dest


def test_first_repro_runs_every_stage(repo):
    ran = _ran((repo.parent / "first_repro.log").read_text())
    assert ran == ALL_STAGES
    for counts in ["prepare_seed", "prepare_web", "prepare_eval"]:
        metrics = yaml.safe_load((repo / "metrics" / f"{counts}.json").read_text())
        assert metrics["read"] == metrics["kept"] + sum(metrics["dropped"].values())
    evaluate = yaml.safe_load((repo / "metrics" / "evaluate.json").read_text())
    assert {"m0", "m1", "m2"} <= set(evaluate["models"])
    for curator in ("base", "m0", "m1"):
        quality = yaml.safe_load((repo / "metrics" / "curation_quality" / f"{curator}.json").read_text())
        assert {"length", "logprob", "likelihood_gain"} <= set(quality["methods"]) and "roc_auc_ci" in quality
    assert "skipped" in yaml.safe_load((repo / "metrics" / "curation_quality" / "curator.json").read_text())
    assert "### Every method × curator" in (repo / "metrics" / "report.md").read_text()


def test_every_plot_renders(repo):
    shown = json.loads(_dvc("plots", "show", "--json", cwd=repo))
    assert not shown.get("errors"), shown["errors"]
    assert shown["data"] and all(shown["data"].values()), [k for k, v in shown["data"].items() if not v]


def test_second_repro_is_a_noop(repo):
    out = _dvc("repro", cwd=repo)
    assert _ran(out) == set()
    assert "up to date" in _dvc("status", cwd=repo).lower()


def test_threshold_change_reruns_only_downstream_of_curation(repo):
    params_path = repo / "params.yaml"
    raw = yaml.safe_load(params_path.read_text())
    raw["curate"]["threshold"][raw["curate"]["method"]] = 2.5
    params_path.write_text(yaml.safe_dump(raw))
    ran = _ran(_dvc("repro", cwd=repo))
    assert {"curate@1", "curate@2"} <= ran
    assert not ran & UPSTREAM_OF_CURATION, f"reran stages upstream of curation: {ran & UPSTREAM_OF_CURATION}"


def test_push_then_pull_in_fresh_clone_restores_outputs(repo, tmp_path):
    remote = tmp_path / "remote"
    _dvc("remote", "add", "-d", "local", str(remote), cwd=repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "run results"], repo)
    _dvc("push", cwd=repo)
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "models" / "m2").exists()
    _dvc("pull", cwd=clone)
    status = _dvc("status", cwd=clone)
    assert "up to date" in status.lower(), status
    for out in ["models/base", "models/m2", "data/augmented.jsonl", "data/curated/2/selected.jsonl",
                "data/responses/m2.json", "data/annotations.json"]:
        assert (clone / out).exists(), out
