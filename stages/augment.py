"""Stage augment: the backward model writes one instruction per web segment → candidate pairs.

Sampled in resumable shards with a seed per segment; four counted filters drop what is not an instruction
(humpback/augmentation.py says which and why).
"""

from __future__ import annotations

import logging
import sys

from humpback.augmentation import augment
from humpback.stage_runner import stage
from humpback.storage.records import iter_jsonl, write_json, write_jsonl

log = logging.getLogger("augment")
# What decides a shard's content (the resume fingerprint): exactly the keys this stage reads.
KEYS = ["seeds.generation", "generation", "augment", "train.backward_max_output_tokens"]


def arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="backward model folder (models/backward)")
    parser.add_argument("--web", required=True, help="web segments (data/web.jsonl)")
    parser.add_argument("--out", required=True, help="candidate pairs to write (data/augmented.jsonl)")
    parser.add_argument("--metrics", required=True, help="counts and throughput (JSON)")


def run(args, params) -> int:
    from humpback.engines.factory import make_engine, stage_settings
    from humpback.engines.models import model_identity
    from humpback.storage.shards import ShardedRun, model_shards_key

    segments = [r for _, r in iter_jsonl(args.web, required=("id", "text"))]
    shards = ShardedRun(
        "augment", model_shards_key("augment", params.values(KEYS), model_identity(args.model), [args.web])
    )
    settings = stage_settings(params, "augment")  # augment.engine, or generation.engine; `auto` resolved once
    engine = make_engine(args.model, settings)
    kept, metrics = augment(engine, segments, params, shards)
    metrics["resolved"] = settings.resolved()  # what engine/dtype `auto` became here
    write_json(args.metrics, metrics)
    if not kept:
        raise ValueError(
            f"no instruction survived the filters ({metrics['read']} segments read, dropped "
            f"{metrics['dropped']}); refusing to write an empty {args.out}: training on nothing is "
            f"never what you want. See {args.metrics}."
        )
    write_jsonl(args.out, kept)
    shards.clear()
    log.info(
        "%d segments -> %d pairs kept, dropped %s; %.0f s, %s new tokens/s -> %s",
        metrics["read"],
        metrics["kept"],
        metrics["dropped"],
        metrics["seconds"],
        metrics["tokens_per_s"],
        args.out,
    )
    return 0


main = stage("augment", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
