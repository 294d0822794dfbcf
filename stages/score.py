"""Stage score@{1,2}: the curator rates every augmented pair (curate.method); nothing is selected here.

Iteration 1 is rated by m0, iteration 2 by m1 (`curate.model: self`, the paper), or both by the model
prepare_curator made (models/curator). Resumable shards (humpback/storage/shards.py); `curate.method: none` runs no
curator and writes the pairs unscored.
"""

from __future__ import annotations

import logging
import sys

from humpback.curation.curator import curator_for, score_iteration
from humpback.curation.methods import writes_text
from humpback.stage_runner import stage
from humpback.storage.records import iter_jsonl, write_json, write_jsonl

log = logging.getLogger("score")


def arguments(parser) -> None:
    parser.add_argument("--iteration", type=int, required=True, choices=(1, 2))
    parser.add_argument("--model", required=True, help="the model being trained (models/m0): the self curator")
    parser.add_argument("--named-curator", required=True, help="the prepared curate.model (models/curator)")
    parser.add_argument("--pairs", required=True, help="candidate pairs (data/augmented.jsonl)")
    parser.add_argument("--out", required=True, help="every pair with its score (JSONL)")
    parser.add_argument("--metrics", required=True, help="parse failures, mean score, seconds (JSON)")


def run(args, params) -> None:
    from humpback.engines.factory import make_engine, stage_settings
    from humpback.engines.models import model_identity
    from humpback.storage.shards import ShardedRun, model_shards_key

    pairs = [r for _, r in iter_jsonl(args.pairs, required=("id", "instruction", "output"))]
    curator, tagging = curator_for(args.model, args.named_curator, params.train.tagging)
    reads_only = not writes_text([params.curate.method])  # picks the precision `auto` means here
    settings = stage_settings(params, "curate", reads_only)  # curate.engine, or generation.engine; `auto` resolved once
    engine = None
    if params.curate.method != "none":
        engine = make_engine(curator, settings)
    keys = [
        "curate.method",
        "curate.max_pair_chars",
        "curate.max_new_tokens",
        "curate.max_retries",
        "curate.engine",
        "curate.api_model",
        "generation",
        "seeds.generation",
    ]
    shard_stage = f"score-{args.iteration}"
    identity = model_identity(curator)
    shards = ShardedRun(
        shard_stage, model_shards_key(shard_stage, {**params.values(keys), "tagging": tagging}, identity, [args.pairs])
    )
    scored, metrics = score_iteration(engine, pairs, params, tagging, shards)
    write_jsonl(args.out, scored)
    write_json(
        args.metrics,
        {
            "iteration": args.iteration,
            "curator": curator,
            "tagged": tagging,
            **metrics,
            "resolved": settings.resolved(),
        },
    )
    shards.clear()
    log.info(
        "score@%d: %d pairs by %s (%s), %s s/pair -> %s",
        args.iteration,
        len(scored),
        curator,
        metrics["method"],
        metrics["seconds_per_pair"],
        args.out,
    )


main = stage("score", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
