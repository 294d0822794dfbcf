"""Training throughput: humpback's trainer against a plain transformers `Trainer`, same model, data and settings,
each side in its own process (so each side's peak memory is its own).

    python benchmarks/train_throughput.py --out F [--steps 10] [--rounds 3]

Both sides train M0's real data (the seed pairs, formatted and masked as the train stage does) with the train
params of params.yaml (method, LoRA, max_seq_len, batch, micro-batch, learning rate) for `--steps` optimizer
steps, in the same precision: bf16 where this machine has fast bf16 kernels (`train.dtype: auto`, the rule
generation uses), else float32.
- ours: `humpback.training.trainer.train`: length-bucketed micro-batches, the loss only at labelled positions and in
  chunks (a float32 head computed inside the loss, one chunk of logits at a time), LoRA's scale folded into
  one matmul per adapted layer, bf16 autocast with LoRA's frozen base held in bf16;
- plain: `Trainer` configured as a competent user would: the model loaded as `base.dtype` stores it, the same
  LoRA (or full) setup, `bf16=True` where bf16 is fast (autocast over float32 weights, the Trainer's mixed
  precision), its default random sampler, the stock loss, the same collator (pad to the longest).

Timed from the end of the first optimizer step to the end of the last (the first pays one-time oneDNN
setup on both sides). Tokens are counted from the examples each side's DataLoader actually fetched, in order,
cut into its micro-batches. `matmul_share`: the useful matmul work (2 · linear weights · real tokens, the head
only on labelled tokens; LoRA: a forward pass plus input gradients through the adapted layers only, none for
the frozen weights; a full finetune: × 3; attention ignored) per second, over this machine's matmul rate in
that precision as `benchmarks/curation.py` measures it.
`ratio` splits exactly into `work_ratio` (FLOPs each side computes per real token: the body at every padded
position, the head where it computes logits; plain / ours) × `rate_ratio` (those FLOPs per second, ours /
plain): what we save by computing less, and what by computing faster. Where both sides run their matmuls
at the machine's peak, `work_ratio` is the ceiling of `ratio`.
Each side runs `--rounds` times, the sides alternating, and its figures pool its runs (time and tokens
summed, the highest peak): a machine whose speed drifts by phases then weighs on both sides alike, and the
per-round ratios show how far one round can be trusted. On a shared machine other processes change both
sides: compare figures from quiet runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks.curation` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIDES = ("humpback", "plain_trainer")


class FetchLog:
    """A dataset that records the index of every example fetched, in fetch order."""

    def __init__(self, dataset):
        self.dataset, self.fetched = dataset, []
        self.lengths = dataset.lengths

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        self.fetched.append(i)
        return self.dataset[i]


def step_tokens(dataset, fetched: list[int], micro: int, grad_accum: int, steps: range) -> dict[str, int]:
    """Real, padded (micro-batch width × rows) and labelled tokens of optimizer steps `steps` (0-based)."""
    per_step = micro * grad_accum
    real = padded = labelled = 0
    for step in steps:
        for start in range(step * per_step, (step + 1) * per_step, micro):
            batch = [dataset[i] for i in fetched[start : start + micro]]
            real += sum(len(item["input_ids"]) for item in batch)
            padded += max((len(item["input_ids"]) for item in batch), default=0) * len(batch)
            labelled += sum(sum(label != -100 for label in item["labels"][1:]) for item in batch)
    return {"real_tokens": real, "padded_tokens": padded, "labelled_tokens": labelled}


def matmul_weights(model) -> tuple[int, int]:
    """(weights of the linears the body computes per token, weights of the output head): base weights only."""
    from torch import nn

    head = model.get_output_embeddings()
    body = sum(
        m.weight.numel()
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and m is not head and "lora_" not in name
    )
    return body, head.weight.numel()


def run_side(side: str, args) -> dict:
    import torch
    from transformers import AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    from humpback.params import load_params
    from humpback.storage.records import read_jsonl
    from humpback.training.examples import PadCollator, build_dataset, forward_examples
    from humpback.training.plan import TrainPlan
    from humpback.training.trainer import compute_dtype, load_trainable, train

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    params = load_params(args.params)
    tp = params.train
    seed = params.seeds.training
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    examples = forward_examples(tokenizer, read_jsonl(args.seed_pairs), [], tp.tagging)
    dataset, _ = build_dataset(tokenizer, examples, tp.max_seq_len, tp.overlong)
    plan = TrainPlan.from_params(tp, len(dataset))
    plan = dataclasses.replace(plan, steps=args.steps or plan.steps)
    logged = FetchLog(dataset)
    bf16 = compute_dtype(tp) == "bfloat16"

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, targs, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    clock = StepClock()
    with tempfile.TemporaryDirectory() as scratch:
        if side == "humpback":
            model = load_trainable(args.base, tp, seed)
            counted = matmul_weights(model.get_base_model() if hasattr(model, "get_base_model") else model)
            train(model, logged, tokenizer.pad_token_id, tp, plan, seed, Path(scratch), callbacks=[clock])
        else:
            # As the base is stored (base.dtype), LoRA by the same config; precision is the Trainer's bf16 flag.
            model = load_trainable(args.base, dataclasses.replace(tp, dtype=params.base.dtype), seed)
            counted = matmul_weights(model.get_base_model() if hasattr(model, "get_base_model") else model)
            trainer = Trainer(
                model=model,
                args=TrainingArguments(
                    output_dir=scratch,
                    max_steps=plan.steps,
                    save_strategy="no",
                    bf16=bf16,
                    use_cpu=not torch.cuda.is_available(),  # else bf16 on a CPU is refused
                    per_device_train_batch_size=plan.micro_batch_size,
                    gradient_accumulation_steps=plan.grad_accum,
                    learning_rate=tp.learning_rate,
                    weight_decay=tp.weight_decay,
                    report_to="none",
                    seed=seed,
                    remove_unused_columns=False,
                    disable_tqdm=True,
                ),
                train_dataset=logged,
                data_collator=PadCollator(tokenizer.pad_token_id),
                callbacks=[clock],
            )
            trainer.train()
    if len(clock.ends) < 2:
        raise SystemExit("train_throughput: needs --steps >= 2 (the first step is not timed)")
    seconds = clock.ends[-1] - clock.ends[0]
    timed = range(1, len(clock.ends))
    counts = step_tokens(dataset, logged.fetched, plan.micro_batch_size, plan.grad_accum, timed)
    body, head = counted
    if tp.method == "lora":  # forward + input gradients, none for the frozen base's weights, none below the
        layers = model.config.num_hidden_layers  # lowest adapted layer (train.lora.layers)
        adapted = min(tp.lora.layers, layers) if tp.lora.layers > 0 else layers
        body_passes, head_passes = 1 + adapted / layers, 2
    else:
        body_passes = head_passes = 3
    useful = 2 * (body_passes * body * counts["real_tokens"] + head_passes * head * counts["labelled_tokens"])
    # What each side actually computes: the body at every padded position; the head where the side computes
    # logits (ours: labelled positions only; the stock loss: every position, padding included).
    head_rows = counts["labelled_tokens"] if side == "humpback" else counts["padded_tokens"]
    computed = 2 * (body_passes * body * counts["padded_tokens"] + head_passes * head * head_rows)
    return {
        "dtype": "bfloat16" if bf16 else "float32",
        "threads": torch.get_num_threads(),
        "steps_timed": len(timed),
        "seconds": seconds,
        "seconds_per_step": seconds / len(timed),
        **counts,
        "real_tokens_per_s": counts["real_tokens"] / seconds,
        "padding_fraction": 1 - counts["real_tokens"] / counts["padded_tokens"],
        "achieved_gflops": useful / seconds / 1e9,
        "computed_gflops": computed / seconds / 1e9,
        "computed_flops_per_real_token": computed / counts["real_tokens"],
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # kB on Linux
        "plan": dataclasses.asdict(plan),
        "examples": len(dataset),
    }


RATES = ("real_tokens_per_s", "achieved_gflops", "computed_gflops")
COUNTS = ("seconds", "real_tokens", "padded_tokens", "labelled_tokens", "steps_timed")


def pooled(runs: list[dict]) -> dict:
    """One side's runs as one: times and tokens summed, rates over the summed time, the highest peak."""
    report = dict(runs[-1])
    for key in COUNTS:
        report[key] = sum(run[key] for run in runs)
    for key in RATES:  # each run's rate × its seconds is its work
        report[key] = sum(run[key] * run["seconds"] for run in runs) / report["seconds"]
    report["seconds_per_step"] = report["seconds"] / report["steps_timed"]
    report["padding_fraction"] = 1 - report["real_tokens"] / report["padded_tokens"]
    report["peak_memory_mb"] = max(run["peak_memory_mb"] for run in runs)
    report["runs"] = len(runs)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="models/base")
    parser.add_argument("--seed-pairs", default="data/seed.jsonl", help="seed pairs JSONL (M0's training data)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per side (0 = one pass)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per side, alternating (pooled; ratios per round)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", help="write the JSON report here")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # internal: run one side, print JSON
    args = parser.parse_args(argv)
    if args.side:
        print(json.dumps(run_side(args.side, args)))
        return
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    for round_ in range(args.rounds):
        # Sides alternate (ours first in even rounds), so a slow phase of the machine falls on both alike.
        for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--side",
                side,
                "--base",
                args.base,
                "--seed-pairs",
                args.seed_pairs,
                "--steps",
                str(args.steps),
                "--params",
                args.params,
            ]
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"train_throughput: the {side} side failed:\n{proc.stderr[-4000:]}")
            runs[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report: dict = {side: pooled(runs[side]) for side in SIDES}
    rounds = [
        ours["real_tokens_per_s"] / plain["real_tokens_per_s"]
        for ours, plain in zip(runs["humpback"], runs["plain_trainer"])
    ]

    import torch

    from benchmarks.curation import matmul_gflops
    from humpback.engines.models import DTYPES

    ours, plain = report["humpback"], report["plain_trainer"]
    peak = matmul_gflops(DTYPES[ours["dtype"]])
    for side in SIDES:
        report[side]["matmul_share"] = report[side]["achieved_gflops"] / peak
    report.update(
        {
            "ratio": ours["real_tokens_per_s"] / plain["real_tokens_per_s"],
            # ratio = work_ratio × rate_ratio, exactly: how much less each real token costs us (padding, the head
            # on labelled positions only) times how fast we compute what we compute (the loss, kernels).
            "work_ratio": plain["computed_flops_per_real_token"] / ours["computed_flops_per_real_token"],
            "rate_ratio": ours["computed_gflops"] / plain["computed_gflops"],
            "padding_fraction": ours["padding_fraction"],
            "peak_memory_mb": ours["peak_memory_mb"],
            "matmul_peak_gflops": peak,
            "matmul_share": ours["matmul_share"],
            "dtype": ours["dtype"],
            "threads": torch.get_num_threads(),
            "rounds": len(rounds),
            "round_ratios": rounds,
            "ratio_min": min(rounds),
            "ratio_max": max(rounds),
        }
    )
    print(
        f"{'trainer':<14} {'s/step':>7} {'real tok':>9} {'padding':>8} {'real tok/s':>10} {'peak MB':>8} "
        f"{'GFLOP/s':>8} {'of peak':>7}"
    )
    for side in SIDES:
        r = report[side]
        print(
            f"{side:<14} {r['seconds_per_step']:>7.2f} {r['real_tokens']:>9} {r['padding_fraction']:>8.1%} "
            f"{r['real_tokens_per_s']:>10.1f} {r['peak_memory_mb']:>8.0f} {r['achieved_gflops']:>8.1f} "
            f"{r['matmul_share']:>7.1%}"
        )
    print(
        f"ratio (ours / plain Trainer, real tokens per second): {report['ratio']:.2f} = work ratio "
        f"{report['work_ratio']:.2f} (computed FLOPs per real token, plain / ours) x rate ratio "
        f"{report['rate_ratio']:.2f} (computed GFLOP/s, ours / plain); {report['dtype']}, "
        f"matmul peak {peak:.0f} GFLOP/s"
    )
    print(
        f"per round (each side its own process, sides alternating): "
        f"{', '.join(f'{r:.2f}' for r in rounds)}; min {min(rounds):.2f}, max {max(rounds):.2f}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
