"""DeepSpeed as the train stage runs it: the config it builds passes transformers' and accelerate's own checks, and
ZeRO-3 in 2 CPU processes (DeepSpeed's CPU accelerator, gloo) trains what one process trains, and resumes after
a kill -9. deepspeed is a dev dependency (pyproject.toml): imported here unguarded, so a missing one fails."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import deepspeed
import pytest
import torch
import yaml
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.state import AcceleratorState
from accelerate.utils import DeepSpeedPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainingArguments
from transformers.integrations.deepspeed import (
    HfTrainerDeepSpeedConfig,
    is_deepspeed_zero3_enabled,
    unset_hf_deepspeed_config,
)

from humpback.params import parse_params
from humpback.training.backends import check_deepspeed_config
from humpback.training.plan import TrainPlan
from humpback.training.trainer import training_arguments
from stages import train as train_stage
from tests.training.test_launch import (
    finish,
    kill_rank_1_after_checkpoint,
    losses,
    raw_params,
    stage_argv,
    stage_process,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "configs/accelerate/deepspeed_zero3.yaml"


def launch_environment_of(config: Path) -> dict[str, str]:
    """The ACCELERATE_* variables `accelerate launch --config_file config` gives its processes (accelerate's
    own parser and DeepSpeed launcher code)."""
    args = launch_command_parser().parse_args(["--config_file", str(config), "--num_processes", "2", "x.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    # As accelerate's launch_command does before its DeepSpeed launcher:
    fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    return {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}


@pytest.fixture
def one_process_launch(monkeypatch):
    """This process as rank 0 of a 1-process launch (what torchrun sets); afterwards the process group that
    TrainingArguments started (through DeepSpeed) and accelerate's process-wide state are taken down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        monkeypatch.setenv(key, value)
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    deepspeed.comm.comm.cdb = None
    AcceleratorState._reset_state(reset_partial_state=True)
    unset_hf_deepspeed_config()  # or a later from_pretrained in this process would load under ZeRO-3


def the_fault(env: dict[str, str], model) -> None:
    """What the stage did before: TrainingArguments(bf16=False) from the launch's environment as it is."""
    args = TrainingArguments(output_dir="unused", report_to="none", max_steps=3)
    config = HfTrainerDeepSpeedConfig(args.deepspeed_plugin.deepspeed_config)
    config.trainer_config_process(args)
    config.trainer_config_finalize(args, model, 3)


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_deepspeed_config_passes_transformers_and_accelerate_validation(
    tmp_path, monkeypatch, tiny_model_dir, one_process_launch, dtype, mixed_precision
):
    """The shipped ZeRO-3 config (and a copy that asks for bf16, as it did) through `accelerate launch`'s
    environment, `training_arguments` (which builds accelerate's DeepSpeedPlugin), then transformers'
    `HfTrainerDeepSpeedConfig` as Trainer.__init__ and deepspeed_init run it: no mismatch, and the project's
    precision (train.dtype, under autocast) leaves DeepSpeed's fp16/bf16 off."""
    config = yaml.safe_load(SHIPPED.read_text())
    config["mixed_precision"] = mixed_precision
    (tmp_path / "ds.yaml").write_text(yaml.safe_dump(config))
    env = launch_environment_of(tmp_path / "ds.yaml")
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if mixed_precision == "bf16":  # the fault, as it was: accelerate writes bf16 in, transformers refuses
        with pytest.raises(ValueError, match=r"ds bf16.enabled=True vs hf bf16"):
            the_fault(env, model)
        AcceleratorState._reset_state(reset_partial_state=True)
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")

    raw = raw_params()
    raw["train"].update({"method": "full", "dtype": dtype})
    tp = parse_params(raw).train
    plan = TrainPlan(steps=3, batch_size=4, micro_batch_size=2, grad_accum=2)
    args = training_arguments(tp, plan, seed=0, scratch=tmp_path / "scratch")
    plugin = args.deepspeed_plugin
    assert isinstance(plugin, DeepSpeedPlugin) and plugin.zero_stage == 3 and not args.use_cpu
    ds = plugin.deepspeed_config
    assert ds["bf16"]["enabled"] is False and ds["fp16"]["enabled"] is False
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True  # the final gather

    hf = HfTrainerDeepSpeedConfig(ds)  # what Trainer.propagate_args_to_deepspeed builds
    hf.trainer_config_process(args)
    hf.trainer_config_finalize(args, model, plan.steps)  # raises on any mismatch (deepspeed_init)
    assert is_deepspeed_zero3_enabled()  # what from_pretrained reads to load under zero.Init
    assert hf.config["train_micro_batch_size_per_gpu"] == 2 and hf.config["gradient_accumulation_steps"] == 2
    plugin.set_mixed_precision(args.mixed_precision)  # what AcceleratorState does with it at Trainer.__init__
    assert not plugin.deepspeed_config["bf16"]["enabled"]
    config_class = deepspeed.runtime.config.DeepSpeedConfig
    parsed = config_class(hf.config)  # and DeepSpeed's own parser (world size from the process group)
    assert parsed.zero_optimization_stage == 3 and not parsed.bfloat16_config.enabled
    assert deepspeed.__version__ == "0.19.8"


def test_lora_7b_config_is_plain_data_parallel():
    """configs/accelerate/lora_ddp.yaml, as accelerate's launcher reads it: DDP (torchrun) on 8 GPUs, no
    DeepSpeed, no FSDP, no mixed precision of its own (train.dtype's)."""
    config = REPO / "configs/accelerate/lora_ddp.yaml"
    args = launch_command_parser().parse_args(["--config_file", str(config), "x.py"])
    args = _validate_launch_command(args)[0]
    assert args.multi_gpu and not args.use_deepspeed and not args.use_fsdp and not args.cpu
    assert args.num_processes == 8 and args.mixed_precision == "no"


def test_after_the_launch_test_models_load_without_zero3():
    """The fixture's teardown leaves nothing that makes a later from_pretrained in this process use ZeRO-3."""
    assert not is_deepspeed_zero3_enabled() and not torch.distributed.is_initialized()


def test_a_deepspeed_config_that_casts_the_model_is_refused():
    check_deepspeed_config({"bf16": {"enabled": False}, "fp16": {"enabled": "auto"}})
    with pytest.raises(ValueError, match="enables bf16"):
        check_deepspeed_config({"bf16": {"enabled": True}})


# ------------------------------------------------------------------------------------------ 2 processes

# Every parameter partitioned and released after use (the tiny model's would otherwise all stay whole:
# DeepSpeed keeps parameters under 1e5 elements on every rank), so the run exercises ZeRO-3's gathering.
ZERO3 = {
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "zero_optimization": {
        "stage": 3,
        "stage3_param_persistence_threshold": 0,
        "stage3_max_live_parameters": 0,
        "stage3_max_reuse_distance": 0,
        "stage3_prefetch_bucket_size": 0,
        "stage3_gather_16bit_weights_on_model_save": True,
    },
}


def zero3_launch_config(folder: Path) -> Path:
    (folder / "zero3.json").write_text(json.dumps(ZERO3))
    config = yaml.safe_load(SHIPPED.read_text())
    for key in ("mixed_precision",):  # settings a deepspeed_config_file holds instead
        config.pop(key)
    config["deepspeed_config"] = {"deepspeed_config_file": str(folder / "zero3.json"), "zero3_init_flag": True}
    (folder / "zero3.yaml").write_text(yaml.safe_dump(config))
    return folder / "zero3.yaml"


def params_file(folder: Path, **launcher) -> Path:
    raw = raw_params(**launcher)
    raw["train"].update({"method": "lora", "learning_rate": 1e-3, "final_learning_rate": 1e-4})
    raw["runtime"]["save_steps"] = 2
    (folder / "p.yaml").write_text(yaml.safe_dump(raw))
    return folder / "p.yaml"


def largest_weight_difference(a: Path, b: Path) -> float:
    x, y = (load_file(f / "models/m0/adapter_model.safetensors") for f in (a, b))
    assert x.keys() == y.keys()
    return max(float((x[k] - y[k]).abs().max()) for k in x)


@pytest.mark.slow
def test_zero3_in_two_processes_trains_as_one_and_resumes_after_kill(tiny_model_dir, tmp_path):
    """LoRA (its fused forward reading partitioned adapter weights) under ZeRO-3 in 2 processes vs the plain
    single process: the same global batches, so the same losses (to the 4 decimals the Trainer logs) and
    adapter weights within 1e-6. Then rank 1 killed with SIGKILL after a checkpoint; the same command again
    resumes from DeepSpeed's checkpoint and ends where the uninterrupted run ended."""
    single, two, killed = (tmp_path / name for name in ("single", "two", "killed"))
    for folder in (single, two, killed):
        folder.mkdir()
    cwd = Path.cwd()
    os.chdir(single)
    try:
        assert train_stage.main(stage_argv(single, tiny_model_dir, params_file(single))) == 0
    finally:
        os.chdir(cwd)
    AcceleratorState._reset_state(reset_partial_state=True)
    card = json.loads((single / "models/m0/card.json").read_text())
    assert card["engine"] == {"kind": "single", "processes": 1}

    launcher = {"kind": "accelerate", "processes": 2}
    finish(
        stage_process(
            two,
            stage_argv(two, tiny_model_dir, params_file(two, **launcher, config=str(zero3_launch_config(two)))),
            "two",
        )
    )
    card = json.loads((two / "models/m0/card.json").read_text())
    assert card["engine"] == {
        "kind": "deepspeed",
        "zero_stage": 3,
        "sharded_parameters": True,
        "processes": 2,
        "backend": "gloo",
    }
    one, curve = losses(single), losses(two)
    assert sorted(curve) == sorted(one) == list(range(1, 13))
    loss_diff = max(abs(curve[s] - one[s]) for s in one)
    weight_diff = largest_weight_difference(single, two)
    print(f"ZeRO-3 2 processes vs 1: largest loss difference {loss_diff:.2e}, weight {weight_diff:.2e}")
    assert loss_diff < 1e-4 and weight_diff < 1e-6

    argv = stage_argv(killed, tiny_model_dir, params_file(killed, **launcher, config=str(zero3_launch_config(killed))))
    interrupted_at = kill_rank_1_after_checkpoint(killed, argv, step=4, timeout=300)
    assert 4 <= interrupted_at < 12, interrupted_at

    finish(stage_process(killed, argv, str(killed)))
    card = json.loads((killed / "models/m0/card.json").read_text())
    assert 4 <= card["resumed_from_step"] <= interrupted_at and card["steps"] == 12
    assert card["engine"]["kind"] == "deepspeed" and card["engine"]["zero_stage"] == 3
    resumed = losses(killed)
    resume_loss = max(abs(resumed[s] - curve[s]) for s in curve)
    resume_weight = largest_weight_difference(two, killed)
    print(
        f"ZeRO-3 killed after step {interrupted_at}, resumed from {card['resumed_from_step']}: largest loss "
        f"difference {resume_loss:.2e}, weight {resume_weight:.2e}"
    )
    assert resume_loss < 1e-4 and resume_weight < 1e-6
    assert torch.isfinite(torch.tensor(list(resumed.values()))).all()
