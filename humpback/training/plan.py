"""How long and how big a training run is, its learning-rate schedule, and the fingerprint that names its
resume folder. Pure functions of params and data: no model, no Trainer.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_constant_schedule_with_warmup

from humpback.params import ParamsError, TrainParams
from humpback.storage.hashing import hash_file, hash_json

# The paper's optimizer steps by training-set size N (Finetuning section). For an N between two rows we
# take the row with the nearest N at or below it (never promise more steps than a larger set would get);
# under 100 examples, the first row.
STEPS_BY_DATA_SIZE: tuple[tuple[int, int], ...] = (
    (100, 30),
    (800, 300),
    (1600, 600),
    (3200, 500),
    (6400, 600),
    (12800, 600),
    (25600, 1200),
    (51200, 1600),
)
SMALL_DATA = 3000  # the paper uses batch 8 below this many examples, 32 from it on


def paper_steps(n_examples: int) -> int:
    steps = STEPS_BY_DATA_SIZE[0][1]
    for size, row_steps in STEPS_BY_DATA_SIZE:
        if n_examples >= size:
            steps = row_steps
    return steps


def paper_batch_size(n_examples: int) -> int:
    return 8 if n_examples < SMALL_DATA else 32


def steps_for_epochs(epochs: float, n_examples: int, batch_size: int) -> int:
    """Optimizer steps for `epochs` passes over `n_examples`. A pass is ceil(n / batch) steps, the last one
    short, as the Trainer counts an epoch; a fractional pass rounds up, so 1.0 sees every example once."""
    per_epoch = math.ceil(n_examples / batch_size)
    return max(1, math.ceil(epochs * per_epoch - 1e-9))  # 1e-9: 0.1 * 30 is 3.0000000000000004


@dataclass(frozen=True)
class TrainPlan:
    steps: int  # optimizer steps
    batch_size: int  # examples per optimizer step, over all processes
    micro_batch_size: int  # examples per forward pass, per process
    grad_accum: int

    @classmethod
    def from_params(cls, params: TrainParams, n_examples: int, world_size: int = 1) -> TrainPlan:
        """Resolve the 0 = "paper's rule" settings; the batch must split evenly into micro-batches."""
        if params.epochs < 0:
            raise ParamsError(f"train.epochs must be >= 0 (0 = the paper's steps table), got {params.epochs}")
        batch = params.batch_size or paper_batch_size(n_examples)
        per_step = params.micro_batch_size * world_size
        if params.micro_batch_size < 1 or batch % per_step:
            raise ParamsError(
                f"train.batch_size {batch} is not a multiple of train.micro_batch_size "
                f"{params.micro_batch_size} × {world_size} process(es)"
            )
        steps = steps_for_epochs(params.epochs, n_examples, batch) if params.epochs else paper_steps(n_examples)
        return cls(steps, batch, params.micro_batch_size, batch // per_step)


def _linear_to_final_factor(step: int, start: float, end: float, warmup_steps: int, decay_end: int) -> float:
    # transformers' polynomial factor at power 1, operation for operation (the same floats as before).
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    if step > decay_end:
        return end / start
    remaining = 1 - (step - warmup_steps) / (decay_end - warmup_steps)
    return ((start - end) * remaining + end) / start


def linear_to_final(
    optimizer: torch.optim.Optimizer,
    learning_rate: float,
    final_learning_rate: float,
    warmup_steps: int,
    total_steps: int,
) -> LambdaLR:
    """Linear warm-up from 0 (if any), then linear decay to `final_learning_rate` at `total_steps`.

    The paper decays 1e-5 → 9e-6, not to zero, which transformers' "linear" schedule cannot do. Its polynomial
    schedule with power 1 computes the same factors, but reads the start from `optimizer.defaults`, which
    DeepSpeed's ZeRO optimizers do not have: the factor is ours, over `learning_rate` (the optimizer's own).
    The factor at step `total_steps` (after the last update) and past it is the end value.
    """
    if final_learning_rate > learning_rate:
        raise ParamsError(
            f"train.final_learning_rate {final_learning_rate} is above train.learning_rate "
            f"{learning_rate}: the schedule decays"
        )
    if final_learning_rate == learning_rate:
        return get_constant_schedule_with_warmup(optimizer, warmup_steps)
    # At least one decay step: a warm-up as long as the run would leave none (the factor is then 1 at the end
    # of the warm-up, as with any decay).
    factor = functools.partial(
        _linear_to_final_factor,
        start=learning_rate,
        end=final_learning_rate,
        warmup_steps=warmup_steps,
        decay_end=max(total_steps, warmup_steps + 1),
    )
    return LambdaLR(optimizer, factor)


def checkpoints_key(role: str, params: dict, inputs: Sequence[str | Path], base_dir: str | Path) -> str:
    """sha256 over what decides a run's checkpoints: role, the params it reads ({dotted key: value}), input
    contents, base model.

    The base model counts by its config and its weight files' names and sizes: hashing gigabytes of weights
    on every start would cost more than it protects (prepare_base rewrites them only when `base` changes).
    """
    base_dir = Path(base_dir)
    weights = sorted((p.name, p.stat().st_size) for p in base_dir.glob("*.safetensors"))
    blob = {
        "role": role,
        "params": params,
        "inputs": [hash_file(p) for p in inputs],
        "base_config": json.loads((base_dir / "config.json").read_text()),
        "base_weights": weights,
    }
    return hash_json(blob)
