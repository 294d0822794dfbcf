"""Stage train@{backward,m0,m1,m2}: finetune the base model (LoRA or full) on seed and curated pairs.

backward = seed pairs reversed (output → instruction); m0 = seed; m1, m2 = seed + a curated selection
(humpback/training/role.py). A killed run resumes from its last checkpoint. `runtime.launcher` picks one process,
torchrun or accelerate launch (humpback/training/launch.py); the command is the same for all three.
"""

from __future__ import annotations

import logging
import sys

from transformers.utils import logging as hf_logging

from humpback.params import ROLES
from humpback.stage_runner import stage
from humpback.training.launch import relaunch
from humpback.training.role import TrainJob, train_role

log = logging.getLogger("train")


def arguments(parser) -> None:
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--base", required=True, help="base model folder (models/base)")
    parser.add_argument("--seed-pairs", required=True, help="seed pairs JSONL (data/seed.jsonl)")
    parser.add_argument("--augmented", help="curated selection JSONL (m1, m2)")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--live", required=True, help="DVCLive folder: loss and learning rate per step")


def run(args, params) -> None:
    hf_logging.disable_progress_bar()  # weight loading/saving bars; the training bar is the one to watch
    job = TrainJob(args.role, args.base, args.seed_pairs, args.augmented, args.out, args.metrics, args.live)
    summary = train_role(job, params)
    log.info("%s: %s", args.role, summary)


main = stage("train", __doc__, arguments, run, launch=relaunch("stages.train"))

if __name__ == "__main__":
    sys.exit(main())
