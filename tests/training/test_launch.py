"""`runtime.launcher`: the train stage in one process, under torchrun or under accelerate launch, with the same
command. The slow test trains the tiny model in 2 CPU processes (gloo) and compares with 1 process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from humpback.params import ParamsError, parse_params
from humpback.training import launch
from humpback.training.launch import LAUNCHED_ENV, launch_command
from stages import train as train_stage
from tests.conftest import seed_pairs

REPO = Path(__file__).resolve().parents[2]
PAIRS = seed_pairs(16)


def raw_params(**launcher) -> dict:
    """The shipped params with small training (16 pairs, batch 4 = 4 steps an epoch, 3 epochs: 12 steps),
    no dropout (the processes' results can then be compared), a checkpoint every step."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update(
        {
            "max_seq_len": 96,
            "epochs": 3.0,
            "batch_size": 4,
            "micro_batch_size": 2,
            "learning_rate": 1e-2,
            "final_learning_rate": 1e-3,
            "dtype": "float32",
        }
    )
    raw["train"]["lora"]["dropout"] = 0.0
    raw["runtime"]["save_steps"] = 1
    raw["runtime"]["launcher"].update(launcher)
    return raw


def write_params(path: Path, **launcher) -> Path:
    path.write_text(yaml.safe_dump(raw_params(**launcher)))
    return path


def stage_argv(folder: Path, base: Path, params: Path) -> list[str]:
    seed = folder / "seed.jsonl"
    seed.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    return [
        "--role",
        "m0",
        "--base",
        str(base),
        "--seed-pairs",
        str(seed),
        "--out",
        "models/m0",
        "--metrics",
        "metrics/m0.json",
        "--live",
        "live",
        "--params",
        str(params),
    ]


# ------------------------------------------------------------------------------------------ fast


def test_shipped_launcher_is_one_process_and_is_validated():
    raw = raw_params()
    assert parse_params(raw).runtime.launcher.kind == "single"
    raw["runtime"]["launcher"]["kind"] = "mpirun"
    with pytest.raises(ParamsError, match="runtime.launcher.kind"):
        parse_params(raw)


def test_launch_command_per_kind(monkeypatch, tmp_path):
    monkeypatch.delenv(LAUNCHED_ENV, raising=False)

    def command(**launcher):
        return launch_command(parse_params(raw_params(**launcher)).runtime.launcher, "stages.train", ["--x", "1"])

    assert command(kind="single", processes=4) is None
    assert command(kind="torchrun", processes=2) == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "stages.train",
        "--x",
        "1",
    ]
    assert command(kind="torchrun", processes=0)[4] == "--nproc-per-node=auto"  # one per GPU
    config = str(REPO / "configs/accelerate/ddp_cpu.yaml")
    assert command(kind="accelerate", processes=2, config=config) == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        config,
        "--num_processes",
        "2",
        "-m",
        "stages.train",
        "--x",
        "1",
    ]
    assert "--num_processes" not in command(kind="accelerate", processes=0, config=config)  # the config's
    with pytest.raises(FileNotFoundError, match="runtime.launcher.config"):
        command(kind="accelerate", config=str(tmp_path / "missing.yaml"))
    with pytest.raises(ParamsError, match="processes"):
        command(kind="torchrun", processes=-1)
    monkeypatch.setenv(LAUNCHED_ENV, "1")  # a process the launcher started trains itself
    assert command(kind="torchrun", processes=2) is None


def test_the_stage_execs_its_launcher_with_its_own_arguments(monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.delenv(LAUNCHED_ENV, raising=False)
    execs = []

    class Exec(Exception):
        pass

    def fake_execve(path, argv, env):
        execs.append((path, argv, env))
        raise Exec

    monkeypatch.setattr(launch.os, "execve", fake_execve)
    argv = stage_argv(tmp_path, tiny_model_dir, write_params(tmp_path / "params.yaml", kind="torchrun", processes=2))
    with pytest.raises(Exec):
        train_stage.main(argv)
    ((path, command, env),) = execs
    assert path == sys.executable and command[1:5] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
    ]
    assert command[5:] == ["-m", "stages.train", *argv] and env[LAUNCHED_ENV] == "1"


# ------------------------------------------------------------------------------------------ 2 processes


def losses(folder: Path) -> dict[int, float]:
    """DVCLive's loss per optimizer step (a resumed run rewrites the curve from its checkpoint: one row a step)."""
    rows = (folder / "live/plots/metrics/loss.tsv").read_text().splitlines()[1:]
    return {int(step): float(loss) for step, loss in (row.split("\t")[:2] for row in rows)}


def stage_process(folder: Path, argv: list[str], marker: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HUMPBACK_TEST_RUN": marker,
    }
    env.pop(LAUNCHED_ENV, None)
    return subprocess.Popen(
        [sys.executable, "-m", "stages.train", *argv],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-4000:]
    return output


def process_with(marker: str, rank: int) -> int | None:
    """The pid of the training process of rank `rank` among the processes a test run started."""
    wanted = {f"HUMPBACK_TEST_RUN={marker}".encode(), f"RANK={rank}".encode()}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = set((entry / "environ").read_bytes().split(b"\0"))
            except OSError:
                continue
            if wanted <= environ:
                return int(entry.name)
    return None


def complete_checkpoints(folder: Path) -> list[int]:
    return [
        int(p.parent.name.split("-")[1])
        for p in folder.glob(".humpback/scratch/train/*/checkpoint-*/trainer_state.json")
    ]


def kill_rank_1_after_checkpoint(folder: Path, argv: list[str], step: int, timeout: float) -> int:
    """Start the stage in `folder`, SIGKILL its rank-1 process once a checkpoint at or past `step` is complete,
    check the launch failed and wrote no model; the last complete checkpoint."""
    proc = stage_process(folder, argv, str(folder))
    deadline = time.monotonic() + timeout
    while not [s for s in complete_checkpoints(folder) if s >= step]:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-4000:]
        time.sleep(0.02)
    victim = process_with(str(folder), rank=1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, output[-4000:]
    assert not (folder / "models/m0").exists()
    return max(complete_checkpoints(folder))


@pytest.mark.slow
def test_two_processes_train_as_one_and_resume_after_kill(tiny_model_dir, tmp_path):
    """1 process (micro-batch 2 × 2 accumulated) vs torchrun with 2 processes (micro-batch 2 each): the same
    global batches, so the same loss curve; rank 0 alone writes. Then accelerate launch with 2 processes,
    one rank killed with SIGKILL after a checkpoint, and `dvc repro`'s same command again: it resumes."""
    single, two, killed = (tmp_path / name for name in ("single", "two", "killed"))
    for folder in (single, two, killed):
        folder.mkdir()
    cwd = Path.cwd()
    os.chdir(single)
    try:
        assert train_stage.main(stage_argv(single, tiny_model_dir, write_params(single / "p.yaml"))) == 0
    finally:
        os.chdir(cwd)
    one = losses(single)
    assert sorted(one) == list(range(1, 13))  # the trainer's global steps

    finish(
        stage_process(
            two, stage_argv(two, tiny_model_dir, write_params(two / "p.yaml", kind="torchrun", processes=2)), "two"
        )
    )
    curve = losses(two)
    assert sorted(curve) == list(range(1, 13))  # the trainer's global steps
    rows = (two / "live/plots/metrics/loss.tsv").read_text().splitlines()
    assert len(rows) == 1 + 12  # one writer: rank 1 appending too would double the rows
    largest = max(abs(curve[s] - one[s]) for s in one)
    print(f"2 processes vs 1: largest loss difference {largest:.2e} over 12 steps")
    assert largest < 1e-4  # the Trainer logs the loss rounded to 4 decimals
    a, b = (load_file(f / "models/m0/adapter_model.safetensors") for f in (single, two))
    weights = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"2 processes vs 1: largest adapter weight difference {weights:.2e} after 12 steps")
    assert weights < 1e-5
    card = json.loads((two / "models/m0/card.json").read_text())
    single_card = json.loads((single / "models/m0/card.json").read_text())
    assert card["engine"] == {"kind": "ddp", "processes": 2, "backend": "gloo"}
    assert single_card["engine"] == {"kind": "single", "processes": 1}
    assert card["plan"]["grad_accum"] == 1 and single_card["plan"]["grad_accum"] == 2
    for key in ("tokens", "trained_tokens", "steps", "examples"):  # counted over both processes
        assert card[key] == single_card[key], key
    assert sorted(p.name for p in (two / "models").iterdir()) == ["m0"]  # no temporary folder left
    assert not any((two / ".humpback/scratch/train").iterdir())

    argv = stage_argv(
        killed,
        tiny_model_dir,
        write_params(
            killed / "p.yaml", kind="accelerate", processes=2, config=str(REPO / "configs/accelerate/ddp_cpu.yaml")
        ),
    )
    interrupted_at = kill_rank_1_after_checkpoint(killed, argv, step=2, timeout=600)
    assert not (killed / "metrics/m0.json").exists()
    assert 2 <= interrupted_at < 12, interrupted_at

    finish(stage_process(killed, argv, str(killed)))
    card = json.loads((killed / "models/m0/card.json").read_text())
    assert card["engine"] == {"kind": "ddp", "processes": 2, "backend": "gloo"}  # ddp_cpu.yaml: DDP over gloo
    print(f"killed rank 1 after checkpoint {interrupted_at}; resumed from step {card['resumed_from_step']}")
    assert 2 <= card["resumed_from_step"] <= interrupted_at and card["steps"] == 12
    resumed = losses(killed)
    assert max(abs(resumed[s] - curve[s]) for s in curve) < 1e-4
    c = load_file(killed / "models/m0/adapter_model.safetensors")
    print(
        f"resumed vs uninterrupted: largest adapter weight difference "
        f"{max(float((b[k] - c[k]).abs().max()) for k in b):.2e}"
    )
    assert all(torch.allclose(b[k], c[k], atol=1e-5) for k in b)
    assert card["tokens"] == single_card["tokens"]  # restored from the checkpoint, then counted on
    shutil.rmtree(tmp_path / "killed" / ".humpback", ignore_errors=True)
