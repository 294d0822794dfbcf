"""Training throughput: humpback's SFTTrainer (length-grouped batches) against a plain transformers Trainer
(random batches), same model, data, collator and settings.

    python -m benchmarks.train_throughput --base models/base --seed data/seed.jsonl --steps 4

Prints one JSON object: per trainer, seconds per step, real and padded tokens, real tokens per second.
Padding is counted from the batches each trainer actually formed. Compare timings only from one run (one
machine, one load): on a shared machine, other processes change both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from transformers import AutoTokenizer, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from humpback.params import DEFAULT_PARAMS_FILE, load_params
from humpback.records import read_jsonl
from humpback.sft_data import PadCollator, build_dataset, forward_examples
from humpback.train_plan import TrainPlan
from humpback.training import EpochSeededLengthSampler, load_trainable, train


class CountingCollator(PadCollator):
    """PadCollator that tallies real (attended) and padded tokens of the batches it builds."""

    def __init__(self, pad_token_id: int):
        super().__init__(pad_token_id)
        object.__setattr__(self, "counts", [0, 0])

    def __call__(self, features):
        batch = super().__call__(features)
        self.counts[0] += int(batch["attention_mask"].sum())
        self.counts[1] += batch["input_ids"].numel()
        return batch


def padding(order: list[int], lengths: list[int], micro: int, steps: int, grad_accum: int) -> tuple[int, int]:
    """(real, padded) tokens in the first `steps` optimizer steps of micro-batches taken in `order`."""
    n = min(len(order), steps * grad_accum * micro)
    batches = [order[i:i + micro] for i in range(0, n, micro)]
    return sum(lengths[i] for b in batches for i in b), sum(max(lengths[i] for i in b) * len(b) for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="models/base")
    parser.add_argument("--seed", default="data/seed.jsonl")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()

    params = load_params(args.params)
    tp = dataclasses.replace(params.train, max_steps=args.steps, save_steps=0)
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    examples = forward_examples(tokenizer, read_jsonl(args.seed), [], tp.tagging)
    dataset, _ = build_dataset(tokenizer, examples, tp.max_seq_len, tp.overlong)
    plan = TrainPlan.from_params(tp, len(dataset))
    seed = params.base.seed
    report: dict = {"examples": len(dataset), "plan": dataclasses.asdict(plan)}

    with tempfile.TemporaryDirectory() as scratch:
        result = train(load_trainable(args.base, tp, params.base.dtype, seed), dataset, tokenizer.pad_token_id,
                       tp, plan, seed, Path(scratch) / "humpback")
        order = list(EpochSeededLengthSampler(dataset.lengths, plan.micro_batch_size * plan.grad_accum, seed))
        real, padded = padding(order, dataset.lengths, plan.micro_batch_size, plan.steps, plan.grad_accum)
        report["humpback"] = {"seconds_per_step": result.seconds / plan.steps, "real_tokens": real,
                              "padded_tokens": padded, "real_tokens_per_s": real / result.seconds}

        collator = CountingCollator(tokenizer.pad_token_id)
        trainer = Trainer(
            model=load_trainable(args.base, tp, params.base.dtype, seed),
            args=TrainingArguments(
                output_dir=str(Path(scratch) / "plain"), max_steps=plan.steps, save_strategy="no",
                per_device_train_batch_size=plan.micro_batch_size, gradient_accumulation_steps=plan.grad_accum,
                learning_rate=tp.learning_rate, weight_decay=tp.weight_decay, report_to="none", seed=seed,
                remove_unused_columns=False, disable_tqdm=True,
            ),
            train_dataset=dataset, data_collator=collator,
        )
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        real, padded = collator.counts
        report["plain_trainer"] = {"seconds_per_step": seconds / plan.steps, "real_tokens": real,
                                   "padded_tokens": padded, "real_tokens_per_s": real / seconds}
    for name in ("humpback", "plain_trainer"):
        r = report[name]
        r["padding_fraction"] = 1 - r["real_tokens"] / r["padded_tokens"]
    report["ratio"] = report["humpback"]["real_tokens_per_s"] / report["plain_trainer"]["real_tokens_per_s"]
    print(f"{'trainer':<14} {'s/step':>8} {'real tok':>9} {'padded tok':>10} {'padding':>8} {'real tok/s':>10}")
    for name in ("humpback", "plain_trainer"):
        r = report[name]
        print(f"{name:<14} {r['seconds_per_step']:>8.2f} {r['real_tokens']:>9} {r['padded_tokens']:>10} "
              f"{r['padding_fraction']:>8.1%} {r['real_tokens_per_s']:>10.1f}")
    print(f"ratio (humpback / plain Trainer real tokens per second): {report['ratio']:.2f}")
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
