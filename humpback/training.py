"""Supervised finetuning with transformers' Trainer: LoRA or full, masked prompts, resumable.

What this adds to a plain Trainer, and why:
- a length-grouped sampler reseeded per epoch from (seed, epoch), so a resumed run sees exactly the batch
  order the interrupted one would have seen;
- the paper's schedule (linear to a final learning rate, not to zero);
- token counts (non-pad, and trained = unmasked) that survive a resume, for the model card;
- one progress bar with the loss on it, instead of a printed dict per step.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedModel,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import get_length_grouped_indices
from transformers.trainer_utils import get_last_checkpoint

from humpback.modeling import DTYPES, atomic_folder
from humpback.params import TrainParams
from humpback.records import write_json
from humpback.sft_data import IGNORE_INDEX, PadCollator, SFTDataset
from humpback.train_plan import TrainPlan, linear_to_final

log = logging.getLogger(__name__)

# Config fields that hold a dropout probability, across common decoder architectures.
DROPOUT_FIELDS = ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout")


def load_trainable(base_dir: str | Path, params: TrainParams, dtype: str = "float32", seed: int = 0):
    """The base model ready to train: wrapped in a LoRA adapter (dropout train.lora.dropout, the base frozen
    as it is), or whole with the paper's dropout (train.dropout) in every dropout field its config has."""
    set_seed(seed)  # LoRA's A matrices are drawn at random: seed before wrapping
    if params.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=DTYPES[dtype])
        config = LoraConfig(
            r=params.lora.r, lora_alpha=params.lora.alpha, lora_dropout=params.lora.dropout,
            target_modules=list(params.lora.target_modules), task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():
            # peft reads `is_gradient_checkpointing`, which transformers 5 deprecates: nothing for us to fix.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, config)
    # Dropout is read when modules are built, so it must be set at load time, not on the config afterwards.
    fields = {k: params.dropout for k in DROPOUT_FIELDS if hasattr(AutoConfig.from_pretrained(base_dir), k)}
    return AutoModelForCausalLM.from_pretrained(base_dir, dtype=DTYPES[dtype], **fields)


class EpochSeededLengthSampler(Sampler[int]):
    """transformers' group-by-length order (shuffle, then sort within mega-batches of whole optimizer steps,
    so micro-batches hold similar lengths and little padding), drawn from a generator seeded by (seed, epoch)
    rather than the global RNG, which a resumed process would be in a different state of."""

    def __init__(self, lengths: Sequence[int], group_size: int, seed: int):
        self.lengths, self.group_size, self.seed, self.epoch = list(lengths), group_size, seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer's dataloader before every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.group_size, generator=generator))


class TokenCounter(TrainerCallback, ExportableState):
    """Tokens consumed by the optimizer steps so far; saved in each checkpoint, restored on resume."""

    def __init__(self, tokens: int = 0, trained_tokens: int = 0):
        self.tokens, self.trained_tokens = tokens, trained_tokens

    def state(self) -> dict:
        return {"args": {"tokens": self.tokens, "trained_tokens": self.trained_tokens}, "attributes": {}}


class QuietProgress(ProgressCallback):
    """Trainer's progress bar, with the loss as its postfix instead of a dict printed under it every step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)


class SFTTrainer(Trainer):
    def __init__(self, *args, final_learning_rate: float, warmup: int, sampler_seed: int, **kwargs):
        self.final_learning_rate, self.warmup, self.sampler_seed = final_learning_rate, warmup, sampler_seed
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        group = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return EpochSeededLengthSampler(dataset.lengths, group, self.sampler_seed)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = linear_to_final(
                optimizer or self.optimizer, self.args.learning_rate, self.final_learning_rate, self.warmup,
                num_training_steps,
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        # The one hook that sees every batch of an optimizer step exactly once (skipped batches on resume
        # never reach it), so the counts match what the model was trained on.
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        # The counter is looked up each time: restoring a checkpoint replaces the callback object.
        counter = next(cb for cb in self.callback_handler.callbacks if isinstance(cb, TokenCounter))
        for batch in batches:
            counter.tokens += int(batch["attention_mask"].sum())
            counter.trained_tokens += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # shifted, as the loss
        return batches, num_items


def last_complete_checkpoint(scratch: Path) -> str | None:
    """`get_last_checkpoint`, skipping a checkpoint that a kill cut short. The Trainer writes
    trainer_state.json last, so a folder without it is incomplete: remove it and fall back to the one before."""
    if not scratch.is_dir():
        return None
    while (last := get_last_checkpoint(str(scratch))) is not None:
        if (Path(last) / "trainer_state.json").is_file():
            return last
        log.warning("removing incomplete checkpoint %s", last)
        shutil.rmtree(last)
    return None


@dataclass
class TrainResult:
    model: PreTrainedModel
    steps: int
    losses: list[tuple[int, float]]  # (optimizer step, loss) for every step, resumed runs included
    tokens: int  # non-pad tokens the optimizer steps consumed
    trained_tokens: int  # of those, the unmasked (response) ones that carry loss
    epochs: float
    final_learning_rate: float
    seconds: float  # this process's training time (a resumed run does not count the interrupted part)
    resumed_from_step: int
    precision: str  # "bf16" (autocast on a GPU that supports it) or "fp32"
    # Under FSDP or DeepSpeed ZeRO-3 each process holds a shard of the weights: the full state dict, gathered
    # by every process together (a collective), for the process that saves. None when the model is whole.
    full_state_dict: dict[str, torch.Tensor] | None = None

    @property
    def final_loss(self) -> float:
        return self.losses[-1][1] if self.losses else float("nan")

    @property
    def tail_loss(self) -> float:
        """Mean loss over the last quarter of the steps: one step's loss is one small batch's, and noisy."""
        tail = [loss for _, loss in self.losses[-max(1, len(self.losses) // 4):]]
        return sum(tail) / len(tail) if tail else float("nan")


def train(
    model: PreTrainedModel,
    dataset: SFTDataset,
    pad_token_id: int,
    params: TrainParams,
    plan: TrainPlan,
    seed: int,
    scratch: str | Path,
    callbacks: Sequence[TrainerCallback] = (),
    save_steps: int = 0,
) -> TrainResult:
    """Train `model` on `dataset` per `plan`, checkpointing into (and resuming from) `scratch` every
    `save_steps` (0 = never; an execution setting: it decides what a killed run resumes from, not the model)."""
    if len(dataset) == 0:
        raise ValueError("no training examples")
    scratch = Path(scratch)
    use_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    args = TrainingArguments(
        output_dir=str(scratch),
        max_steps=plan.steps,
        per_device_train_batch_size=plan.micro_batch_size,
        gradient_accumulation_steps=plan.grad_accum,
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
        bf16=use_bf16,
        logging_steps=1,
        save_strategy="steps" if save_steps > 0 else "no",
        save_steps=max(save_steps, 1),
        save_total_limit=1,  # resume needs only the latest checkpoint
        restore_callback_states_from_checkpoint=True,  # the token counts
        report_to="none",
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning is a no-op with a warning on CPU
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=PadCollator(pad_token_id),
        callbacks=[TokenCounter(), *callbacks],
        final_learning_rate=params.final_learning_rate, warmup=params.warmup_steps, sampler_seed=seed,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(QuietProgress())

    last = last_complete_checkpoint(scratch)
    if last:
        log.info("resuming from %s", last)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - start

    counter = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TokenCounter))
    full_state_dict = None
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        # Every rank must take part in the gather; only rank 0 writes (stages/train.py).
        full_state_dict = trainer.accelerator.get_state_dict(trainer.model)
    return TrainResult(
        model=trainer.accelerator.unwrap_model(trainer.model),
        steps=trainer.state.global_step,
        losses=[(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e],
        tokens=counter.tokens,
        trained_tokens=counter.trained_tokens,
        epochs=float(trainer.state.epoch or 0.0),
        final_learning_rate=trainer.lr_scheduler.get_last_lr()[0],
        seconds=seconds,
        resumed_from_step=int(Path(last).name.rsplit("-", 1)[-1]) if last else 0,
        precision="bf16" if use_bf16 else "fp32",
        full_state_dict=full_state_dict,
    )


def save_trained(model: PreTrainedModel, tokenizer, out: str | Path, base_ref: str, card: dict[str, Any],
                 state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write the adapter (or full model), the tokenizer and `card.json` to `out`, atomically.

    `state_dict`: the full weights gathered from a sharded (FSDP / ZeRO-3) run; the model object alone would
    save only this process's shard.

    An adapter records `base_ref` exactly as given (e.g. the relative `models/base`), so
    `modeling.load_model(out)` finds its base from the repo root, in any clone of the project.
    """
    with atomic_folder(out) as tmp:
        if hasattr(model, "peft_config"):
            for config in model.peft_config.values():
                config.base_model_name_or_path = base_ref
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "card.json", card)
