"""Which engine trains (single process, DDP, FSDP, DeepSpeed ZeRO) and what the training code must do for each.

The engine is an execution setting (`runtime.launcher`, an accelerate config): it must not change what is
trained. Three things follow, each a fault that stopped a DeepSpeed run before:

- Precision is `train.dtype`'s alone. The Trainer's forward runs under our own autocast (`CausalLMTrainer`), over
  float32 master weights (a full finetune) or a bf16 frozen base with a float32 adapter (LoRA), whatever the
  engine. An accelerate config's `mixed_precision: bf16` would make accelerate write `bf16.enabled: true` into
  DeepSpeed's config, which transformers' `HfTrainerDeepSpeedConfig` then finds at odds with
  `TrainingArguments(bf16=False)` and refuses in `deepspeed_init`; under FSDP it would add accelerate's own
  autocast, whose wrapper upcasts every output (the logits whole) to float32. `launch_environment` therefore
  sets the launch's mixed precision to "no" before the Trainer's arguments read it: DeepSpeed keeps float32
  weights and the autocast computes in bf16, as in one process.
- accelerate skips DeepSpeed when `use_cpu` is set (it trains with DDP then); DeepSpeed has its own CPU
  accelerator (gloo), so a DeepSpeed launch never sets it.
- The full weights of a sharded run are gathered from the object that holds the shards: DeepSpeed's engine
  (`trainer.model_wrapped`; `trainer.model` is the bare module under it), FSDP's wrapped model
  (`trainer.model`).

`engine_of` reads back from the objects that trained which engine it was, for the model card: a config that
asked for FSDP on CPUs trains with DDP (accelerate enables FSDP on GPU process groups only), and the card says so.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

MIXED_PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"
SAVE_16BIT_ENV = "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"


def deepspeed_launch() -> bool:
    """Whether this process was started by `accelerate launch` with a DeepSpeed config."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def launch_environment() -> None:
    """Adjust what `accelerate launch` put in this process's environment, before `TrainingArguments` reads it:
    mixed precision off (precision is `train.dtype`'s, module docstring) and, under DeepSpeed, ZeRO-3's
    gathered save on (the stage writes the full weights at the end; without it accelerate refuses to gather).
    A DeepSpeed JSON file (`deepspeed_config_file`) is the user's own: `check_deepspeed_config` reads it."""
    asked = os.environ.get(MIXED_PRECISION_ENV)
    if asked not in (None, "no"):
        log.warning(
            "the accelerate config asks for mixed_precision %s: ignored, precision is train.dtype's "
            "(autocast over float32 weights, whatever the engine)",
            asked,
        )
        os.environ[MIXED_PRECISION_ENV] = "no"
    if deepspeed_launch():
        os.environ[SAVE_16BIT_ENV] = "true"


def check_deepspeed_config(config: dict[str, Any]) -> None:
    """Refuse a DeepSpeed config that would cast the model itself (fp16/bf16 enabled): precision is
    `train.dtype`'s, computed under the trainer's autocast; DeepSpeed holds the float32 weights."""
    for key in ("fp16", "bf16"):
        if str(config.get(key, {}).get("enabled", False)).lower() == "true":
            raise ValueError(
                f"the DeepSpeed config enables {key}: set {key}.enabled to false (or leave it out); "
                "training precision is train.dtype's, under autocast"
            )


def engine_of(trainer) -> dict[str, Any]:
    """The engine that trained, read from the trainer's objects (not from the config that asked for one):
    {"kind": "deepspeed", "zero_stage": N, "sharded_parameters": bool} (ZeRO-3 partitions the parameters
    themselves), {"kind": "fsdp", "version": N, "sharded_parameters": bool}, {"kind": "ddp"} or
    {"kind": "single"}; each with "processes" and, when several, the collective "backend"."""
    processes = trainer.accelerator.num_processes
    info: dict[str, Any] = {"processes": processes}
    if processes > 1 and dist.is_available() and dist.is_initialized():
        info["backend"] = str(dist.get_backend())
    if trainer.is_deepspeed_enabled:
        engine = trainer.model_wrapped
        module = getattr(engine, "module", engine)
        # ZeRO-3 replaces each parameter's data by an empty placeholder and keeps the shard in ds_tensor.
        sharded = any(hasattr(p, "ds_tensor") for p in module.parameters())
        return {
            "kind": "deepspeed",
            "zero_stage": int(engine.zero_optimization_stage()),
            "sharded_parameters": sharded,
            **info,
        }
    if trainer.is_fsdp_enabled:
        from torch.distributed.tensor import DTensor

        plugin = trainer.accelerator.state.fsdp_plugin
        params = list(trainer.model.parameters())
        # FSDP2 holds each parameter as a DTensor sharded over the ranks; FSDP1 flattens them into FlatParameters.
        sharded = any(isinstance(p, DTensor) or type(p).__name__ == "FlatParameter" for p in params)
        return {
            "kind": "fsdp",
            "version": int(getattr(plugin, "fsdp_version", 1)),
            "sharded_parameters": sharded,
            **info,
        }
    if isinstance(trainer.model_wrapped, torch.nn.parallel.DistributedDataParallel):
        return {"kind": "ddp", **info}
    return {"kind": "single", **info}


def full_state_dict(trainer) -> dict[str, torch.Tensor] | None:
    """The full weights of a sharded run (FSDP, DeepSpeed ZeRO), gathered by every rank together (a
    collective: call it on every rank); None where each process holds the whole model."""
    if trainer.is_deepspeed_enabled:
        return trainer.accelerator.get_state_dict(trainer.model_wrapped)  # the engine, not the bare module
    if trainer.is_fsdp_enabled:
        return trainer.accelerator.get_state_dict(trainer.model)  # the FSDP-wrapped model
    return None
