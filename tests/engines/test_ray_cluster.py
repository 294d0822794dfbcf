"""`runtime.cluster: ray`: augment and score on a local Ray cluster (127.0.0.1, 2 CPUs, 2 actors) equal `local`.

The stages run as DVC runs them (`stages.augment.main`, `stages.score.main`) on the tiny model, with the
transformers engine in every actor: the shards' bytes must not depend on where they were computed, nor on an
actor lost mid-shard. Ray is started once for the module (conftest's `ray_local`), with token authentication
from the environment (as a real cluster's key would come), and that token must appear in nothing the stages
write or log. These tests need Ray (`pip install -e '.[cluster]'`, which `make setup` does): without it they
fail, they do not skip.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch
import yaml

from humpback.engines import ray_cluster
from humpback.engines.factory import engine_settings, make_engine
from humpback.engines.model_folders import prepare_curator
from humpback.engines.ray_cluster import ModelPathError, RayPool
from stages import augment as augment_stage
from stages import score as score_stage
from tests.conftest import RAY_TOKEN as TOKEN
from tests.conftest import candidate_pairs, shipped_params

ROOT = Path(__file__).resolve().parents[2]
THREADS = 2  # torch threads in the local run and in each actor; Ray starts its workers with 1


SEGMENTS = [
    {"id": f"seg-{i}", "text": f"Segment {i}: " + "decorators wrap functions to extend them. " * (1 + i % 3)}
    for i in range(8)
]
PAIRS = candidate_pairs(8)


def stage_inputs(folder: Path) -> Path:
    """Both stages' inputs (8 records, shards of 2), the self curator, a params file per cluster setting."""
    (folder / "web.jsonl").write_text("".join(json.dumps(s) + "\n" for s in SEGMENTS))
    (folder / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    prepare_curator("self", "float32", folder / "self-curator")
    for cluster in ("local", "ray"):
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["generation"].update(engine="transformers", dtype="float32")
        params["augment"].update(max_new_tokens=6, filters=[])  # a random model writes no sentences: keep them
        params["curate"].update(method="pmi")
        params["runtime"].update(augment_shard_size=2, score_shard_size=2, cluster=cluster)
        params["runtime"]["ray"].update(actors=2, num_cpus=1, threads=0)  # 0: the stage process's thread count
        (folder / f"params-{cluster}.yaml").write_text(yaml.safe_dump(params))
    return folder


def run_augment(folder: Path, model: Path, cluster: str, tag: str) -> bytes:
    assert (
        augment_stage.main(
            [
                "--model",
                str(model),
                "--web",
                "web.jsonl",
                "--out",
                f"aug-{tag}.jsonl",
                "--metrics",
                f"aug-{tag}.json",
                "--params",
                f"params-{cluster}.yaml",
            ]
        )
        == 0
    )
    return (folder / f"aug-{tag}.jsonl").read_bytes()


def run_score(folder: Path, model: Path, cluster: str, tag: str) -> bytes:
    """score@1: the model rates the pairs (curate.method pmi: two completion reads per pair)."""
    assert (
        score_stage.main(
            [
                "--iteration",
                "1",
                "--model",
                str(model),
                "--named-curator",
                "self-curator",
                "--pairs",
                "pairs.jsonl",
                "--out",
                f"score-{tag}.jsonl",
                "--metrics",
                f"score-{tag}.json",
                "--params",
                f"params-{cluster}.yaml",
            ]
        )
        == 0
    )
    return (folder / f"score-{tag}.jsonl").read_bytes()


@pytest.fixture(scope="module")
def local(tmp_path_factory, tiny_model_dir) -> dict[str, bytes]:
    """The `local` run's outputs (no Ray), once for the module, at THREADS torch threads."""
    folder = stage_inputs(tmp_path_factory.mktemp("local"))
    with pytest.MonkeyPatch.context() as m:
        m.chdir(folder)
        torch.set_num_threads(THREADS)
        try:
            out = {
                "augment": run_augment(folder, tiny_model_dir, "local", "local"),
                "score": run_score(folder, tiny_model_dir, "local", "local"),
            }
        finally:
            torch.set_num_threads(1)
    assert len(out["augment"].splitlines()) == 8 and len(out["score"].splitlines()) == 8
    return out


@pytest.fixture()
def stage_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the resume scratch (.humpback/scratch) lands here
    return stage_inputs(tmp_path)


@pytest.fixture()
def pools(monkeypatch):
    """What each stage's actors report when they start and after the stage's last shard: {"start": [...],
    "end": [...]} per RayPool, in the order the stages ran. No pool is kept: its actors (and the CPUs they hold)
    go when the stage drops it, as when a stage's process ends."""
    seen: list[dict] = []
    map_shards = RayPool.map_shards

    def reported(self, work, shards):
        yield from map_shards(self, work, shards)
        seen.append({"start": list(self.infos), "end": ray.get([actor.info.remote() for actor in self.actors])})

    monkeypatch.setattr(RayPool, "map_shards", reported)
    return seen


def test_augment_and_score_on_two_actors_equal_local_byte_for_byte(
    ray_local, local, stage_dir, tiny_model_dir, pools, capsys, caplog
):
    torch.set_num_threads(THREADS)  # what the local run had; the actors take it (runtime.ray.threads 0)
    try:
        assert run_augment(stage_dir, tiny_model_dir, "ray", "ray") == local["augment"]
        assert run_score(stage_dir, tiny_model_dir, "ray", "ray") == local["score"]
    finally:
        torch.set_num_threads(1)

    # Both stages ran on two actors, each computing with the local run's thread count (not Ray's 1), each
    # building its engine once.
    assert len(pools) == 2
    for pool in pools:
        infos = pool["end"]
        assert [i["pid"] for i in infos] == [i["pid"] for i in pool["start"]]
        assert len({i["pid"] for i in infos}) == 2 and os.getpid() not in {i["pid"] for i in infos}
        assert [i["threads"] for i in infos] == [THREADS, THREADS]
        assert {i["omp_num_threads"] for i in infos} == {"1"}
        assert {i["host"] for i in infos} == {socket.gethostname()}

    # The cluster's key came from the environment and is in nothing the stages wrote or logged.
    written = [p for p in stage_dir.rglob("*") if p.is_file()]
    assert written and not [p for p in written if TOKEN.encode() in p.read_bytes()]
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text


def test_an_actor_killed_mid_shard_is_restarted_and_the_output_is_unchanged(
    ray_local, local, stage_dir, tiny_model_dir, pools, monkeypatch
):
    """ray.kill(actor, no_restart=False) right after a shard was handed to it: Ray restarts the actor (its engine
    is built again) and retries the shard; the stage writes what an undisturbed run writes."""
    submitted: list[list] = []
    submit = RayPool._submit

    def submit_then_kill(self, actor, work, shard):
        ref = submit(self, actor, work, shard)
        submitted.append(shard)  # not the actor: a handle kept here would keep the actor (and its CPU) alive
        if len(submitted) == 2:  # the second shard, in flight on the other actor
            ray.kill(actor, no_restart=False)
        return ref

    monkeypatch.setattr(RayPool, "_submit", submit_then_kill)
    torch.set_num_threads(THREADS)
    try:
        assert run_augment(stage_dir, tiny_model_dir, "ray", "killed") == local["augment"]
    finally:
        torch.set_num_threads(1)
    assert len(submitted) == 4  # each shard handed out once: Ray itself retried the lost one on the restarted actor
    (pool,) = pools
    before, after = ([i["pid"] for i in pool[when]] for when in ("start", "end"))
    assert [b == a for b, a in zip(before, after)].count(False) == 1  # the killed one came back, a new process


def test_a_model_folder_a_node_cannot_read_stops_the_stage_naming_host_and_path(
    ray_local, stage_dir, tiny_model_dir, capsys
):
    """Here (the stage's process) and on an actor: a node without the shared folder refuses before any work.
    The actor's case is a folder that was there when the stage started and is gone when its actors start."""
    missing = stage_dir / "models" / "m0"
    assert (
        augment_stage.main(
            [
                "--model",
                str(missing),
                "--web",
                "web.jsonl",
                "--out",
                "aug.jsonl",
                "--metrics",
                "aug.json",
                "--params",
                "params-ray.yaml",
            ]
        )
        == 1
    )
    error = capsys.readouterr().err
    assert f"host {socket.gethostname()}) cannot read {missing} (No such file or directory)" in error
    assert "same path" in error and not (stage_dir / "aug.jsonl").exists()

    shutil.copytree(tiny_model_dir, missing)
    params = shipped_params()
    runtime = dataclasses.replace(params.runtime, cluster="ray", ray=dataclasses.replace(params.runtime.ray, actors=2))
    pool = make_engine(missing, engine_settings(params.generation, runtime))
    assert isinstance(pool, RayPool) and not pool.actors
    shutil.rmtree(missing)
    with pytest.raises(
        ModelPathError,
        match=rf"Ray actor on host {socket.gethostname()} cannot read {missing} "
        r"\(No such file or directory\).*same path",
    ):
        pool.generate(["a prompt"], 2, [1])
    assert not pool.actors


def test_a_single_engine_call_runs_whole_on_one_actor(ray_local, tiny_model_dir):
    """respond, score_dev, likelihood and a local judge call the engine once: on one actor, the local answer."""
    params = shipped_params()
    generation = dataclasses.replace(params.generation, engine="transformers", dtype="float32")
    runtime = dataclasses.replace(params.runtime, cluster="ray", ray=dataclasses.replace(params.runtime.ray, actors=2))
    local = make_engine(tiny_model_dir, engine_settings(generation, params.runtime))
    pool = make_engine(tiny_model_dir, engine_settings(generation, runtime))
    prompts, seeds = ["What is a decorator?", "Name two uses of a cache."], [11, 12]
    texts = pool.generate(prompts, 4, seeds)
    assert len(pool.actors) == 1 and texts == local.generate(prompts, 4, seeds)
    assert pool.completion_logprobs(prompts, [" A wrapper.", " Speed."]) == local.completion_logprobs(
        prompts, [" A wrapper.", " Speed."]
    )
    pool.close()


def test_the_pool_pickled_into_an_actor_is_that_actor_s_engine_and_nowhere_else():
    with pytest.raises(RuntimeError, match="outside its actors"):
        ray_cluster.held_engine()


def test_the_default_run_does_not_import_ray():
    code = (
        "import sys, stages.augment, stages.score, stages.respond, humpback.engines.factory, "
        "humpback.storage.shards; "
        "sys.exit(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT).returncode == 0
