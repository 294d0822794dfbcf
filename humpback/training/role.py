"""One training run of the DAG: train@{backward,m0,m1,m2} reads its pairs, builds the examples with the one
template (humpback/prompts.py via sft_data), trains, and writes the model folder with its card, the metrics and
the loss curve.

backward = seed pairs reversed (output → instruction); m0 = seed; m1, m2 = seed + a curated selection, or the
selection alone with `train.mix: augmented` (the paper's ablation). Checkpoints go to a scratch folder named by a
fingerprint of everything that decides the run, so a killed `dvc repro` resumes where it stopped; the folder is
deleted once the outputs are written.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from humpback.params import DEFAULT, Params, SeedParams, TrainParams
from humpback.storage.records import iter_jsonl, write_json
from humpback.storage.workdirs import TRAIN_SCRATCH
from humpback.training.examples import DataReport, SFTDataset, backward_examples, build_dataset, forward_examples
from humpback.training.launch import close_process_group, is_main_process
from humpback.training.plan import TrainPlan, checkpoints_key
from humpback.training.trainer import (
    LiveCurve,
    TrainResult,
    load_trainable,
    save_trained,
    train,
    training_arguments,
)

log = logging.getLogger("train")

# The params that decide a model, per role: its card and its resume fingerprint record exactly these, and
# dvc.yaml's train_backward and train@{m0,m1,m2} list the same (the whole-DAG test compares reads with them).
# Each role has its own seed key (seeds.training_<role>, `default` = seeds.training), so reseeding one model
# reruns that train stage and what follows it, not the whole pipeline.
COMMON_KEYS = (
    "seeds.training",
    "train.method",
    "train.max_seq_len",
    "train.overlong",
    "train.epochs",
    "train.batch_size",
    "train.micro_batch_size",
    "train.learning_rate",
    "train.final_learning_rate",
    "train.weight_decay",
    "train.dropout",
    "train.warmup_steps",
    "train.dtype",
    "train.lora",
)
ROLE_KEYS = {
    "backward": (*COMMON_KEYS, "seeds.training_backward", "train.backward_max_output_tokens"),
    "m0": (*COMMON_KEYS, "seeds.training_m0", "train.tagging"),
    "m1": (*COMMON_KEYS, "seeds.training_m1", "train.tagging", "train.mix"),
    "m2": (*COMMON_KEYS, "seeds.training_m2", "train.tagging", "train.mix"),
}
WITH_AUGMENTED = ("m1", "m2")
SCRATCH_ROOT = TRAIN_SCRATCH


class TrainDataError(ValueError):
    """Training inputs that cannot make a model (wrong combination, nothing left to train on)."""


def training_seed(seeds: SeedParams, role: str) -> int:
    """The seed of one role's training (data order, adapter initialisation, dropout): `seeds.training_<role>`,
    where `default` means the whole pipeline's `seeds.training`."""
    own = getattr(seeds, f"training_{role}")
    return seeds.training if own == DEFAULT else own


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    return [record for _, record in iter_jsonl(path, required=("instruction", "output"))]


@dataclass(frozen=True)
class TrainJob:
    """One train stage's files, as dvc.yaml names them: what it reads and what it writes."""

    role: str  # backward | m0 | m1 | m2
    base: str  # base model folder (models/base)
    seed_pairs: str  # seed pairs JSONL
    augmented: str | None  # the curated selection JSONL (m1, m2; None for backward and m0)
    out: str  # model folder to write
    metrics: str  # metrics JSON to write
    live: str | None = None  # DVCLive folder for the per-step curves (None: no curves)

    @property
    def inputs(self) -> list[str]:
        """The data files that decide the run (part of its checkpoints' key)."""
        return [self.seed_pairs] + ([self.augmented] if self.augmented is not None else [])


@dataclass(frozen=True)
class Examples:
    """The role's training examples, tokenized, with the tokenizer that made them and their counts."""

    tokenizer: Any
    dataset: SFTDataset
    report: DataReport


@dataclass(frozen=True)
class Trained:
    """What a finished run hands to the outputs: the trainer's result and what decided it."""

    result: TrainResult
    plan: TrainPlan
    seed: int  # the role's training seed
    scratch: Path  # the checkpoints folder, removed once the outputs are written


def train_role(job: TrainJob, params: Params, scratch_root: Path = SCRATCH_ROOT) -> dict[str, Any]:
    """Train one role and write its model folder and metrics, logging the curves into `job.live` (DVCLive) as
    it goes; return the metrics."""
    examples = build_examples(job, params.train)
    trained = train_examples(job, examples, params, scratch_root)
    summary = write_outputs(job, examples, trained, params)
    close_process_group()
    return summary


def build_examples(job: TrainJob, tp: TrainParams) -> Examples:
    """Read the role's pairs (checking the inputs fit the role) and tokenize them with the one template."""
    role, augmented = job.role, job.augmented
    if (augmented is not None) != (role in WITH_AUGMENTED):
        raise TrainDataError(f"--augmented is {'required' if role in WITH_AUGMENTED else 'not used'} for {role}")
    seed_pairs = read_pairs(job.seed_pairs)
    augmented_pairs = read_pairs(augmented) if augmented is not None else []
    if augmented is not None and not augmented_pairs:
        log.warning("%s has no rows (the curator selected nothing): training %s on seed pairs only", augmented, role)

    if role in WITH_AUGMENTED and tp.mix == "augmented":  # the paper's augmented-only ablation
        seed_pairs = []
    tokenizer = AutoTokenizer.from_pretrained(job.base)
    examples = (
        backward_examples(tokenizer, seed_pairs, tp.backward_max_output_tokens)
        if role == "backward"
        else forward_examples(tokenizer, seed_pairs, augmented_pairs, tp.tagging)
    )
    dataset, report = build_dataset(tokenizer, examples, tp.max_seq_len, tp.overlong)
    if len(dataset) == 0:
        raise TrainDataError(
            f"no training examples for {role}: read {report.read}, dropped {report.dropped} "
            f"(train.max_seq_len={tp.max_seq_len})"
        )
    if sum(report.dropped.values()):
        log.warning(
            "%s: dropped %s of %d examples (train.max_seq_len=%d, train.overlong=%s)",
            role,
            report.dropped,
            sum(report.read.values()),
            tp.max_seq_len,
            tp.overlong,
        )
    return Examples(tokenizer, dataset, report)


def train_examples(job: TrainJob, examples: Examples, params: Params, scratch_root: Path) -> Trained:
    """Train the base model on the examples with the role's seed, checkpointing into (and resuming from) the
    scratch folder its key names."""
    role, tp, dataset, tokenizer = job.role, params.train, examples.dataset, examples.tokenizer
    plan = TrainPlan.from_params(tp, len(dataset), world_size=int(os.environ.get("WORLD_SIZE", "1")))
    scratch = (
        scratch_root / f"{role}-{checkpoints_key(role, params.values(ROLE_KEYS[role]), job.inputs, job.base)[:16]}"
    )
    log.info("%s: %d examples %s, %s, scratch %s", role, len(dataset), examples.report.kept, plan, scratch)

    # The Trainer's arguments first: they start a multi-process launch's process group, which sharded
    # loading (ZeRO-3, FSDP) needs while the model loads.
    train_seed = training_seed(params.seeds, role)
    args = training_arguments(tp, plan, train_seed, scratch, save_steps=params.runtime.save_steps)
    model = load_trainable(job.base, tp, seed=train_seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    result = train(model, dataset, pad_id, tp, plan, train_seed, scratch, callbacks=live_callbacks(job.live), args=args)
    return Trained(result, plan, train_seed, scratch)


def write_outputs(job: TrainJob, examples: Examples, trained: Trained, params: Params) -> dict[str, Any]:
    """The model folder with its card and the metrics (rank 0 alone under a multi-process launch), then the
    scratch folder removed; return the metrics."""
    result, report, tp = trained.result, examples.report, params.train
    summary = {
        "final_loss": result.final_loss,
        "tail_loss": result.tail_loss,
        "steps": result.steps,
        "epochs": round(result.epochs, 3),
        "examples": len(examples.dataset),
        "examples_seed": report.kept["seed"],
        "examples_augmented": report.kept["augmented"],
        "truncated": report.truncated,
        "dropped": sum(report.dropped.values()),
        "tokens": result.tokens,
        "trained_tokens": result.trained_tokens,
        "padding_fraction": round(result.padding_fraction, 4),
        "final_learning_rate": result.final_learning_rate,
    }
    # Timings go to the metrics only: in the card they would give the same weights a new folder hash on every
    # rerun, and DVC would rerun everything downstream of a model that did not change.
    timings = {
        "seconds": round(result.seconds, 1),
        "seconds_per_step": round(result.seconds / max(1, result.steps - result.resumed_from_step), 2),
    }
    card = {
        "role": job.role,
        "base": job.base,
        "method": tp.method,
        "precision": result.precision,
        "engine": result.engine,  # what actually trained (a config asking for FSDP on CPUs trains with DDP)
        "inputs": {"seed": job.seed_pairs, "augmented": job.augmented},
        "data": report.to_dict(),
        "plan": dataclasses.asdict(trained.plan),
        "params": params.values(ROLE_KEYS[job.role]),
        "training_seed": trained.seed,
        "resumed_from_step": result.resumed_from_step,
        **summary,
    }
    metrics = {**summary, **timings}
    if is_main_process():  # under a multi-process launch, rank 0 writes the outputs; the others wait for it
        save_trained(result.model, examples.tokenizer, job.out, job.base, card, state_dict=result.full_state_dict)
        write_json(job.metrics, metrics)
        shutil.rmtree(trained.scratch, ignore_errors=True)  # only once every output is in place
    return metrics


def live_callbacks(live_dir: str | Path | None) -> list:
    """The DVCLive curves, per optimizer step, into `live_dir` while training runs (`dvc plots show` draws them;
    a resumed run continues the curve, `training.LiveCurve`). No dvc.yaml of its own and no experiment commit:
    the stage's outputs are DVC's business."""
    if live_dir is None or not is_main_process():
        return []
    return [LiveCurve(live_dir)]
