"""Supervised finetuning with transformers' Trainer: LoRA or full, masked prompts, resumable.

What this adds to a plain Trainer, and why:
- micro-batches of similar length (examples sorted by length within windows of a seeded shuffle, then the
  micro-batches shuffled): far less padding than random batches (docs/training.md "Batching"), and the order is drawn
  from (seed, epoch), so a resumed run sees exactly the batches the interrupted one would have seen;
- bf16 mixed precision where this machine's bf16 matmuls are fast (`train.dtype: auto`, the rule
  generation's likelihood reads use), under our own autocast so the logits stay in bf16 (the Trainer's own
  bf16 upcasts every output);
- the loss computed only at labelled positions, in chunks, with the output head computed inside it where the
  head is a plain float32 linear, or a frozen one held in the autocast dtype (`humpback/training/loss.py`);
- LoRA's scale folded into one matmul per adapted layer, in float32 or under bf16 autocast
  (`humpback/training/lora_forward.py`);
- the paper's schedule (linear to a final learning rate, not to zero);
- token counts (non-pad, trained = unmasked, padded) that survive a resume, for the model card;
- one progress bar with the loss on it, instead of a printed dict per step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
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
from transformers.trainer_utils import get_last_checkpoint

from humpback.engines.models import DTYPES, resolve_dtype
from humpback.params import TrainParams
from humpback.storage.records import atomic_folder, write_json
from humpback.training.backends import (
    check_deepspeed_config,
    deepspeed_launch,
    engine_of,
    full_state_dict,
    launch_environment,
)
from humpback.training.examples import IGNORE_INDEX, PadCollator, SFTDataset
from humpback.training.lora_forward import fused_lora_forward
from humpback.training.loss import can_defer, deferred_head, head_cross_entropy, labelled_cross_entropy, logits_mask
from humpback.training.plan import TrainPlan, linear_to_final

log = logging.getLogger(__name__)

# Config fields that hold a dropout probability, across common decoder architectures.
DROPOUT_FIELDS = ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout")
# Micro-batches' worth of examples sorted by length together: little padding without the same batches every
# epoch, as a whole-epoch sort would give (docs/training.md "Batching").
SORT_WINDOW = 16


def top_layers(n_layers: int, n_top: int) -> list[int] | None:
    """The indices of the top `n_top` layers for peft's `layers_to_transform` (None = every layer). With the
    layers below frozen whole, autograd stops at the lowest adapted layer: no input-gradient matmuls and no
    saved activations below it, so a step costs less time and memory than adapting every layer."""
    if n_top <= 0 or n_top >= n_layers:
        return None
    return list(range(n_layers - n_top, n_layers))


def compute_dtype(params: TrainParams) -> str:
    """The dtype training's matmuls run in: `train.dtype`, `auto` = bfloat16 where that is fast for training."""
    return resolve_dtype(params.dtype, compute_bound=True)


def load_trainable(base_dir: str | Path, params: TrainParams, seed: int = 0):
    """The base model ready to train: wrapped in a LoRA adapter (dropout train.lora.dropout), or whole with the
    paper's dropout (train.dropout) in every dropout field its config has.

    LoRA's frozen base is held in the compute dtype (under bf16 autocast its weights would be cast to bf16 on
    every forward anyway; held so, they take half the memory and no cast); the adapter stays float32 (peft's
    default), the weights the optimizer updates. A full finetune keeps float32 master weights: autocast
    computes in bf16, the optimizer steps in float32."""
    set_seed(seed)  # LoRA's A matrices are drawn at random: seed before wrapping
    if params.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=DTYPES[compute_dtype(params)])
        config = LoraConfig(
            r=params.lora.r,
            lora_alpha=params.lora.alpha,
            lora_dropout=params.lora.dropout,
            target_modules=list(params.lora.target_modules),
            task_type="CAUSAL_LM",
            layers_to_transform=top_layers(model.config.num_hidden_layers, params.lora.layers),
        )
        with warnings.catch_warnings():
            # peft reads `is_gradient_checkpointing`, which transformers 5 deprecates: nothing for us to fix.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, config)
    # Dropout is read when modules are built, so it must be set at load time, not on the config afterwards.
    fields = {k: params.dropout for k in DROPOUT_FIELDS if hasattr(AutoConfig.from_pretrained(base_dir), k)}
    return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, **fields)


class EpochSeededLengthSampler(Sampler[int]):
    """Examples in micro-batches of similar length, without packing: shuffle, sort each window of
    `window` micro-batches' worth by length and cut it into micro-batches, then shuffle the micro-batches
    (so optimizer steps do not run from short to long). The order comes from a generator seeded by
    (seed, epoch), not the global RNG, which a resumed process would be in a different state of.

    Yields indices micro-batch after micro-batch, for a DataLoader whose batch size is `micro_batch_size`; the
    one short micro-batch an epoch can have comes last, so the DataLoader's cuts fall on these boundaries."""

    def __init__(self, lengths: Sequence[int], micro_batch_size: int, seed: int, window: int = SORT_WINDOW):
        self.lengths, self.micro, self.window, self.seed, self.epoch = list(lengths), micro_batch_size, window, seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer's dataloader before every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        span = self.micro * self.window
        batches = []
        for start in range(0, len(order), span):
            window = sorted(order[start : start + span], key=self.lengths.__getitem__)
            batches += [window[i : i + self.micro] for i in range(0, len(window), self.micro)]
        full = [b for b in batches if len(b) == self.micro]
        short = [b for b in batches if len(b) < self.micro]
        shuffled = [full[k] for k in torch.randperm(len(full), generator=generator).tolist()]
        return iter([i for batch in shuffled + short for i in batch])


class TokenCounter(TrainerCallback, ExportableState):
    """Tokens consumed by the optimizer steps so far; saved in each checkpoint, restored on resume.
    tokens: real (attended); trained_tokens: labelled; padded_tokens: computed, padding included."""

    def __init__(self, tokens: int = 0, trained_tokens: int = 0, padded_tokens: int = 0):
        self.tokens, self.trained_tokens, self.padded_tokens = tokens, trained_tokens, padded_tokens

    def state(self) -> dict:
        args = {"tokens": self.tokens, "trained_tokens": self.trained_tokens, "padded_tokens": self.padded_tokens}
        return {"args": args, "attributes": {}}


class QuietProgress(ProgressCallback):
    """Trainer's progress bar, with the loss as its postfix instead of a dict printed under it every step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)


class LiveCurve(TrainerCallback):
    """DVCLive's per-step curves (loss, learning rate, gradient norm, epoch) written into `live_dir` as training
    runs, one row per optimizer step at the Trainer's global step, 1..N.

    Unlike transformers' DVCLiveCallback (its own step counter from 0, and a resume that reads the previous
    rows back from `live_dir`), a resumed run rewrites the folder from the log history restored with the
    checkpoint: `dvc repro` removes the folder, a stage output, before rerunning a killed stage, and steps
    logged after that checkpoint are trained and logged again, so only the checkpoint knows the curve so far."""

    def __init__(self, live_dir: str | Path):
        self.live_dir, self.live = Path(live_dir), None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from dvclive import Live

        # resume=False: whatever a killed run left in the folder goes; the history below replaces it.
        self.live = Live(dir=str(self.live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
        for entry in state.log_history:  # empty on a fresh run; up to the checkpoint's step on a resume
            self._log(entry, entry["step"])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.live is not None and logs:
            self._log(logs, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.live is not None:
            self.live.end()

    def _log(self, entry: dict, step: int) -> None:
        from dvclive.plots import Metric
        from dvclive.utils import standardize_metric_name

        per_step = "loss" in entry  # the end-of-training entry (runtime, mean loss) goes in the summary only
        self.live.step = step
        for key, value in entry.items():
            if key != "step" and Metric.could_log(value):
                self.live.log_metric(standardize_metric_name(key, "dvclive.huggingface"), value, plot=per_step)
        self.live.make_summary()


class CausalLMTrainer(Trainer):
    """transformers' Trainer for a causal LM trained on its labelled tokens (not trl's SFTTrainer: no trl here),
    with the sampler, loss, precision and schedule above. The loss goes through the Trainer's own
    `compute_loss_func` hook, so it receives the step's labelled-token count and is scaled for gradient
    accumulation and multiple processes as the stock loss is."""

    def __init__(self, *args, final_learning_rate: float, warmup: int, sampler_seed: int, bf16: bool, **kwargs):
        self.final_learning_rate, self.warmup, self.sampler_seed, self.use_bf16 = (
            final_learning_rate,
            warmup,
            sampler_seed,
            bf16,
        )
        super().__init__(*args, compute_loss_func=self._loss, **kwargs)
        self._deferred_head: nn.Linear | None = None

    def _loss(self, outputs, labels, num_items_in_batch=None):
        if self._deferred_head is not None:  # outputs.logits are the labelled rows' hidden states
            return head_cross_entropy(outputs.logits, self._deferred_head, labels, num_items_in_batch)
        return labelled_cross_entropy(outputs.logits, labels, num_items_in_batch)

    def _head_to_defer(self, model, return_outputs: bool) -> nn.Linear | None:
        """The output head, when the loss can compute it (`loss.head_cross_entropy`): a training step of an
        unsharded model (FSDP and ZeRO-3 gather the head's weight only inside the forward) whose outputs
        nobody else reads, with a head `loss.can_defer` takes (called under the step's autocast)."""
        if (
            return_outputs
            or not torch.is_grad_enabled()
            or not model.training
            or self.is_fsdp_enabled
            or self.is_deepspeed_enabled
        ):
            return None
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        return head if head is not None and can_defer(head) else None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # The head runs only where a next token is labelled (transformers 5 takes a boolean logits_to_keep).
        inputs = {**inputs, "logits_to_keep": logits_mask(inputs["labels"])}
        head = self._head_to_defer(model, return_outputs)
        if head is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._deferred_head = head
        try:
            with deferred_head(head):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self._deferred_head = None

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True):
        # The Trainer's hook for the forward's autocast. Ours rather than `TrainingArguments(bf16=True)`,
        # whose accelerate wrapper converts every output to float32: the logits would be upcast whole.
        if not self.use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.args.device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return EpochSeededLengthSampler(dataset.lengths, self.args.per_device_train_batch_size, self.sampler_seed)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = linear_to_final(
                optimizer or self.optimizer,
                self.args.learning_rate,
                self.final_learning_rate,
                self.warmup,
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
        counts = torch.zeros(3, dtype=torch.long)
        for batch in batches:
            counts += torch.tensor(
                [
                    int(batch["attention_mask"].sum()),
                    int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()),  # shifted, as the loss
                    batch["input_ids"].numel(),
                ]
            )
        if self.accelerator.num_processes > 1:  # every process counts the step's whole batch, all ranks' parts
            counts = self.accelerator.reduce(counts.to(self.accelerator.device), reduction="sum").cpu()
        counter.tokens += int(counts[0])
        counter.trained_tokens += int(counts[1])
        counter.padded_tokens += int(counts[2])
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
    padded_tokens: int  # positions computed, padding included
    epochs: float
    final_learning_rate: float
    seconds: float  # this process's training time (a resumed run does not count the interrupted part)
    resumed_from_step: int
    precision: str  # "bf16" (autocast, where bf16 is fast here) or "fp32"
    # The engine that trained, read from the trainer's objects (backends.engine_of): kind (single, ddp,
    # fsdp, deepspeed), processes, backend, ZeRO stage / FSDP version, whether the parameters were sharded.
    engine: dict[str, Any]
    # Under FSDP or DeepSpeed ZeRO-3 each process holds a shard of the weights: the full state dict, gathered
    # by every process together (a collective), for the process that saves. None when the model is whole.
    full_state_dict: dict[str, torch.Tensor] | None = None

    @property
    def final_loss(self) -> float:
        return self.losses[-1][1] if self.losses else float("nan")

    @property
    def padding_fraction(self) -> float:
        return 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0

    @property
    def tail_loss(self) -> float:
        """Mean loss over the last quarter of the steps: one step's loss is one small batch's, and noisy."""
        tail = [loss for _, loss in self.losses[-max(1, len(self.losses) // 4) :]]
        return sum(tail) / len(tail) if tail else float("nan")


def training_arguments(
    params: TrainParams, plan: TrainPlan, seed: int, scratch: str | Path, save_steps: int = 0
) -> TrainingArguments:
    """The Trainer's arguments. Building them starts the process group of a multi-process launch (torchrun,
    accelerate launch) and reads accelerate's FSDP / DeepSpeed settings, so build them *before* loading the
    model: DeepSpeed ZeRO-3's `zero3_init_flag` and FSDP's `cpu_ram_efficient_loading` act inside
    `from_pretrained`, and only when the process group exists by then. Under `accelerate launch` the launch's
    mixed precision is switched off first (`backends.launch_environment`: precision is train.dtype's)."""
    launch_environment()
    # Without a GPU the Trainer sets up data parallelism (gloo) only when told the run is on the CPU; but with
    # `use_cpu` accelerate drops DeepSpeed, which brings its own CPU accelerator instead. That one needs the
    # backend named: accelerate finds none for a CPU device and would count each process as a run of its own.
    cpu_deepspeed = deepspeed_launch() and not torch.cuda.is_available()
    multi_process_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(scratch),
        max_steps=plan.steps,
        per_device_train_batch_size=plan.micro_batch_size,
        gradient_accumulation_steps=plan.grad_accum,
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
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
        use_cpu=multi_process_cpu and not cpu_deepspeed,
        ddp_backend="gloo" if cpu_deepspeed else None,
    )
    if args.deepspeed_plugin is not None:
        check_deepspeed_config(args.deepspeed_plugin.deepspeed_config)
    return args


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
    args: TrainingArguments | None = None,
) -> TrainResult:
    """Train `model` on `dataset` per `plan`, checkpointing into (and resuming from) `scratch` every
    `save_steps` (0 = never; an execution setting: it decides what a killed run resumes from, not the model).
    `args`: from `training_arguments` (the same values), when they had to exist before the model was loaded."""
    if len(dataset) == 0:
        raise ValueError("no training examples")
    scratch = Path(scratch)
    use_bf16 = compute_dtype(params) == "bfloat16"
    if args is None:
        args = training_arguments(params, plan, seed, scratch, save_steps)
    trainer = CausalLMTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=PadCollator(pad_token_id),
        callbacks=[TokenCounter(), *callbacks],
        final_learning_rate=params.final_learning_rate,
        warmup=params.warmup_steps,
        sampler_seed=seed,
        bf16=use_bf16,
    )
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and not trainer.is_fsdp_enabled:
        # accelerate turns FSDP on for GPU processes only; on CPUs the same config trains with plain DDP.
        log.warning("the accelerate config asks for FSDP, which accelerate enables only on GPUs: training with DDP")
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(QuietProgress())

    last = last_complete_checkpoint(scratch)
    if last:
        log.info("resuming from %s", last)
    start = time.perf_counter()
    with fused_lora_forward(model):
        trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - start

    counter = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TokenCounter))
    engine = engine_of(trainer)
    log.info("trained with %s", engine)
    return TrainResult(
        model=trainer.accelerator.unwrap_model(trainer.model),
        steps=trainer.state.global_step,
        losses=[(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e],
        tokens=counter.tokens,
        trained_tokens=counter.trained_tokens,
        padded_tokens=counter.padded_tokens,
        epochs=float(trainer.state.epoch or 0.0),
        final_learning_rate=trainer.lr_scheduler.get_last_lr()[0],
        seconds=seconds,
        resumed_from_step=int(Path(last).name.rsplit("-", 1)[-1]) if last else 0,
        precision="bf16" if use_bf16 else "fp32",
        engine=engine,
        # Every rank must take part in the gather; only rank 0 writes (stages/train.py).
        full_state_dict=full_state_dict(trainer),
    )


def save_trained(
    model: PreTrainedModel,
    tokenizer,
    out: str | Path,
    base_ref: str,
    card: dict[str, Any],
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the adapter (or full model), the tokenizer and `card.json` to `out`, atomically.

    `state_dict`: the full weights gathered from a sharded (FSDP / ZeRO-3) run; the model object alone would
    save only this process's shard.

    An adapter records `base_ref` exactly as given (e.g. the relative `models/base`), so
    `engines.models.load_model(out)` finds its base from the repo root, in any clone of the project.
    """
    with atomic_folder(out) as tmp:
        if hasattr(model, "peft_config"):
            for config in model.peft_config.values():
                config.base_model_name_or_path = base_ref
                if isinstance(config.target_modules, set):  # peft writes a set in this process's hash order
                    config.target_modules = sorted(config.target_modules)
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "card.json", card)
