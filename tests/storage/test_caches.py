"""Caches that outlive a stage are the repository's, not a workspace's: a queued experiment (`dvc exp run --queue`,
run by DVC in a temporary workspace under `<repo>/.dvc/tmp/exps/`) and a git worktree read and add to the main
workspace's judge and hash caches, safely when two run at once."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from humpback.curation import scoring
from humpback.engines.factory import engine_settings
from humpback.evaluation.head_to_head import evaluate_models
from humpback.evaluation.judges import make_judge
from humpback.storage import hashing, workdirs
from humpback.storage.hashing import hash_file
from humpback.storage.workdirs import CACHE_ENV, cache_root, main_workspace, merge_json
from tests.evaluation.test_evaluation import _data, _score_settings


@pytest.fixture(autouse=True)
def no_cache_override(monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)


def dvc_temp_workspace(repo: Path, name: str) -> Path:
    """Where `dvc queue start` runs an experiment: a checkout in `<repo>/.dvc/tmp/exps/<tmpXXXX>`."""
    workspace = repo / ".dvc" / "tmp" / "exps" / name
    workspace.mkdir(parents=True)
    return workspace


def test_cache_root_is_the_main_workspaces_from_a_dvc_temporary_workspace(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    temp = dvc_temp_workspace(repo, "tmpa1b2c3")
    monkeypatch.chdir(temp)
    assert cache_root() == repo.resolve() / ".humpback" / "cache"
    monkeypatch.chdir(repo)
    assert cache_root() == repo.resolve() / ".humpback" / "cache"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "shared"))
    assert workdirs.judge_cache() == tmp_path / "shared" / "judge"


def test_a_git_worktree_uses_its_main_workspaces_caches(tmp_path):
    repo, tree = tmp_path / "repo", tmp_path / "tree"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"]
    repo.mkdir()
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], cwd=repo, check=True)
    subprocess.run([*git, "worktree", "add", "-q", "--detach", str(tree)], cwd=repo, check=True)
    assert main_workspace(tree) == repo.resolve()
    assert main_workspace(repo) == repo.resolve()


def test_a_second_queued_run_judges_nothing_the_first_judged(tmp_path, tiny_model_dir, monkeypatch):
    """Two queued experiments, each in its own temporary workspace holding its own copy of the judge model (DVC
    checks outputs out by copying): the second makes no judge call for the pairs the first judged."""
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    calls = []
    real = scoring.score_pairs

    def counted(engine, pairs, *args, **kwargs):
        calls.append(len(pairs))
        return real(engine, pairs, *args, **kwargs)

    monkeypatch.setattr(scoring, "score_pairs", counted)
    params, settings = _score_settings("pmi")  # the default judge: each answer scored alone
    reference, model = _data(3)
    results = []
    for name in ("tmpfirst", "tmpsecond"):
        workspace = dvc_temp_workspace(repo, name)
        shutil.copytree(tiny_model_dir, workspace / "models" / "base")
        monkeypatch.chdir(workspace)
        judge, info = make_judge(settings, engine_settings(params.generation, params.runtime), "models/base")
        results.append((evaluate_models(judge, {"m1": model}, reference, max_chars=200)[0], info["id"]))
        monkeypatch.chdir(tmp_path)
        shutil.rmtree(workspace)  # DVC removes a temporary workspace once its experiment is committed
    (first, first_id), (second, second_id) = results
    assert calls == [6]  # 3 model answers + 3 reference answers, in the first run only
    assert first_id == second_id and second["m1"] == first["m1"]
    assert (repo / ".humpback" / "cache" / "judge" / first_id / "scores.json").is_file()


def _add_entries(path: Path, worker: int, n: int) -> None:
    for i in range(n):
        merge_json(path, {f"{worker}-{i}": i})


def test_two_workers_adding_to_one_cache_file_keep_both(tmp_path):
    path = tmp_path / "scores.json"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_entries, args=(path, w, 30)) for w in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert merge_json(path, {}) == {f"{w}-{i}": i for w in range(2) for i in range(30)}


def test_hash_cache_follows_the_file_not_its_path(tmp_path, monkeypatch):
    """Remembered by (device, inode, size, mtime): another name of the same file (a hard link, as DVC's
    `cache.type hardlink` checks out) hits; a copy, a rewrite and a file modified just now are read."""
    reads = []
    real = hashing.hash_files
    monkeypatch.setattr(hashing, "hash_files", lambda paths: reads.append(list(paths)) or real(paths))
    cache = tmp_path / "cache"
    weights = tmp_path / "a" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights" * 1000)
    long_ago = time.time() - 3600
    os.utime(weights, (long_ago, long_ago))

    digest = hash_file(weights, cache)
    assert hash_file(weights, cache) == digest and len(reads) == 1
    link = tmp_path / "b" / "model.safetensors"
    link.parent.mkdir()
    os.link(weights, link)
    assert hash_file(link, cache) == digest and len(reads) == 1  # another name, no read

    copy = tmp_path / "c" / "model.safetensors"
    copy.parent.mkdir()
    shutil.copyfile(weights, copy)
    assert hash_file(copy, cache) == digest and len(reads) == 2  # a copy is another file: read once

    weights.unlink()  # replaced, as an atomic rewrite does; same size, modified just now
    weights.write_bytes(b"WEIGHTS" * 1000)
    fresh = hash_file(weights, cache)
    assert fresh != digest and len(reads) == 3
    assert hash_file(weights, cache) == fresh and len(reads) == 4  # too recent to trust its mtime: read again
