"""Stage train@{backward,m0,m1,m2}: finetune the base model (LoRA or full) on seed and curated pairs.

backward = seed pairs reversed (output → instruction); m0 = seed; m1, m2 = seed + a curated selection.
Checkpoints go to a scratch folder named by a fingerprint of everything that decides the run, so a killed
`dvc repro` resumes where it stopped; the folder is deleted once the outputs are written.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from humpback.params import DEFAULT_PARAMS_FILE, Params, ParamsError, load_params
from humpback.records import RecordError, atomic_path, iter_jsonl, write_csv, write_json
from humpback.sft_data import backward_examples, build_dataset, forward_examples
from humpback.train_plan import TrainPlan, fingerprint
from humpback.training import load_trainable, save_trained, train

log = logging.getLogger("train")

ROLES = ("backward", "m0", "m1", "m2")
WITH_AUGMENTED = ("m1", "m2")
SCRATCH_ROOT = Path(".humpback/scratch/train")  # git- and dvc-ignored


class TrainDataError(ValueError):
    """Training inputs that cannot make a model (wrong combination, nothing left to train on)."""


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    return [record for _, record in iter_jsonl(path, required=("instruction", "output"))]


def run(
    role: str, base: str, seed: str, augmented: str | None, out: str, metrics: str, loss: str, plot: str,
    params: Params, scratch_root: Path = SCRATCH_ROOT,
) -> dict[str, Any]:
    """Train one role and write its model folder, metrics, loss CSV and plot; return the metrics."""
    if (augmented is not None) != (role in WITH_AUGMENTED):
        raise TrainDataError(f"--augmented is {'required' if role in WITH_AUGMENTED else 'not used'} for {role}")
    seed_pairs = read_pairs(seed)
    augmented_pairs = read_pairs(augmented) if augmented is not None else []
    if augmented is not None and not augmented_pairs:
        log.warning("%s has no rows (the curator selected nothing): training %s on seed pairs only", augmented, role)

    tp = params.train
    tokenizer = AutoTokenizer.from_pretrained(base)
    examples = (
        backward_examples(tokenizer, seed_pairs, tp.backward_max_output_tokens) if role == "backward"
        else forward_examples(tokenizer, seed_pairs, augmented_pairs, tp.tagging)
    )
    dataset, report = build_dataset(tokenizer, examples, tp.max_seq_len, tp.overlong)
    if len(dataset) == 0:
        raise TrainDataError(
            f"no training examples for {role}: read {report.read}, dropped {report.dropped} "
            f"(train.max_seq_len={tp.max_seq_len})"
        )
    if sum(report.dropped.values()):
        log.warning("%s: dropped %s of %d examples (train.max_seq_len=%d, train.overlong=%s)", role,
                    report.dropped, sum(report.read.values()), tp.max_seq_len, tp.overlong)
    plan = TrainPlan.from_params(tp, len(dataset), world_size=int(os.environ.get("WORLD_SIZE", "1")))
    inputs = [seed] + ([augmented] if augmented is not None else [])
    scratch = scratch_root / f"{role}-{fingerprint(role, tp, params.base.seed, inputs, base)[:16]}"
    log.info("%s: %d examples %s, %s, scratch %s", role, len(dataset), report.kept, plan, scratch)

    model = load_trainable(base, tp, seed=params.base.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    result = train(model, dataset, pad_id, tp, plan, params.base.seed, scratch)

    summary = {
        "final_loss": result.final_loss,
        "tail_loss": result.tail_loss,
        "steps": result.steps,
        "epochs": round(result.epochs, 3),
        "examples": len(dataset),
        "examples_seed": report.kept["seed"],
        "examples_augmented": report.kept["augmented"],
        "truncated": report.truncated,
        "dropped": sum(report.dropped.values()),
        "tokens": result.tokens,
        "trained_tokens": result.trained_tokens,
        "padding_fraction": round(result.padding_fraction, 4),
        "seconds": round(result.seconds, 1),
        "seconds_per_step": round(result.seconds / max(1, result.steps - result.resumed_from_step), 2),
        "final_learning_rate": result.final_learning_rate,
    }
    card = {
        "role": role,
        "base": base,
        "method": tp.method,
        "precision": result.precision,
        "inputs": {"seed": seed, "augmented": augmented},
        "data": report.to_dict(),
        "plan": dataclasses.asdict(plan),
        "params": {"train": dataclasses.asdict(tp), "base_seed": params.base.seed, "base_dtype": params.base.dtype},
        "resumed_from_step": result.resumed_from_step,
        **summary,
    }
    if int(os.environ.get("RANK", "0")) != 0:  # under a multi-process launch, one process writes the outputs
        return summary
    save_trained(result.model, tokenizer, out, base, card, state_dict=result.full_state_dict)
    write_json(metrics, summary)
    write_csv(loss, ["step", "loss"], result.losses)
    plot_loss(plot, result.losses, title=f"train@{role}")
    shutil.rmtree(scratch, ignore_errors=True)  # only once every output is in place
    return summary


def plot_loss(path: str | Path, losses: list[tuple[int, float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a build machine
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in losses], [v for _, v in losses], marker=".")
    ax.set(xlabel="optimizer step", ylabel="training loss (response tokens)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--base", required=True, help="base model folder (models/base)")
    parser.add_argument("--seed", required=True, help="seed pairs JSONL")
    parser.add_argument("--augmented", help="curated selection JSONL (m1, m2)")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--loss", required=True, help="per-step loss CSV (step,loss)")
    parser.add_argument("--plot", required=True, help="loss curve PNG")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hf_logging.disable_progress_bar()  # weight loading/saving bars; the training bar is the one to watch

    try:
        params = load_params(args.params)
        summary = run(args.role, args.base, args.seed, args.augmented, args.out, args.metrics, args.loss,
                      args.plot, params)
    except (TrainDataError, RecordError, ParamsError, FileNotFoundError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 1
    log.info("%s: %s", args.role, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
