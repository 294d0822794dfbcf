"""A killed training rerun by `dvc repro` draws one DVCLive curve: steps 1..N, each once.

DVC removes a stage's outputs (the DVCLive folder among them) before it runs the stage again, so the curve of
the steps before the resume must come from the checkpoint the run resumes from, not from the removed folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from transformers import TrainerCallback

from humpback.params import ROLES
from humpback.training.role import TrainJob, live_callbacks, train_role
from tests.training.test_training import SEED_PAIRS, make_params, stage_paths, write_jsonl

REPO = Path(__file__).resolve().parents[2]


class Killed(Exception):
    pass


class KillAfterLog(TrainerCallback):
    """A kill once step `step` was logged: after the checkpoint before it, so the logged steps between that
    checkpoint and the kill are trained (and logged) again by the rerun."""

    def __init__(self, step: int):
        self.step = step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.step and logs and "loss" in logs:
            raise Killed


def curve(live: Path, name: str) -> list[tuple[int, float]]:
    """(step, value) rows of a DVCLive folder's curve `name`, or of the .tsv file `live` itself."""
    path = live if live.suffix == ".tsv" else live / "plots" / "metrics" / f"{name}.tsv"
    rows = path.read_text().splitlines()
    assert rows[0].split("\t")[:2] == ["step", name]
    return [(int(step), float(value)) for step, value in (row.split("\t")[:2] for row in rows[1:])]


def test_kill_and_rerun_gives_one_curve_with_steps_1_to_n(tiny_model_dir, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)  # relative paths and .humpback/ scratch, as dvc runs the stage
    shutil.copytree(tiny_model_dir, "models/base")
    seed = write_jsonl(tmp_path / "seed.jsonl", SEED_PAIRS)
    params = make_params(epochs=2.0, save_steps=2)  # 12 examples, batch 4: 6 steps, checkpoints at 2, 4, 6
    paths = stage_paths("m0")
    live = Path(paths["live"])

    monkeypatch.setattr("humpback.training.role.live_callbacks", lambda d: [*live_callbacks(d), KillAfterLog(3)])
    with pytest.raises(Killed):
        train_role(TrainJob("m0", "models/base", seed, None, **paths), params)
    before = dict(curve(live, "loss"))
    assert sorted(before) == [1, 2, 3]  # the trainer's global steps, not a counter from 0

    monkeypatch.setattr("humpback.training.role.live_callbacks", live_callbacks)
    shutil.rmtree(live)  # what `dvc repro` does to a stage's outputs before running it again
    summary = train_role(TrainJob("m0", "models/base", seed, None, **paths), params)

    assert summary["steps"] == 6
    loss = curve(live, "loss")
    assert [step for step, _ in loss] == [1, 2, 3, 4, 5, 6]
    for step in (1, 2):  # restored from the checkpoint the rerun resumed from
        assert dict(loss)[step] == before[step]
    assert dict(loss)[3] == pytest.approx(before[3], abs=1e-4)  # step 3 trained again, from the same state
    assert loss[-1][1] == pytest.approx(summary["final_loss"], abs=1e-4)
    for name in ("learning_rate", "grad_norm"):  # every per-step curve, the one dvc.yaml plots included
        assert [step for step, _ in curve(live, name)] == [1, 2, 3, 4, 5, 6]
    plotted = [(path, column) for path, column in live_plots() if path.startswith(f"{live}/")]
    assert plotted and all(curve(Path(path), column) for path, column in plotted)  # dvc.yaml reads what we write


def live_plots() -> list[tuple[str, str]]:
    """(file, column) of every DVCLive curve dvc.yaml's `plots:` draws."""
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    return [
        (path, column)
        for plot in plots
        if isinstance(plot, dict)
        for spec in plot.values()
        for path, column in spec.get("y", {}).items()
        if "/live_" in path
    ]


def test_dvc_yaml_plots_every_models_gradient_norm():
    grad_norm = {path for path, column in live_plots() if column == "grad_norm"}
    assert grad_norm == {f"metrics/train/live_{role}/plots/metrics/grad_norm.tsv" for role in ROLES}
