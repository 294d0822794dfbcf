"""Stage prepare_web: the web source → header-anchored, filtered, deduplicated segments (the whole pool), counts.

Streams the corpus in resumable shards (see humpback/sources/web.py); sample_web draws `data.web.limit` of the
pool, so changing the sample size never re-reads the corpus.
"""

from __future__ import annotations

import sys
import time

from humpback.sources import prepare_web
from humpback.stage_runner import stage
from humpback.storage.records import write_json


def arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="every kept segment (JSONL)")
    parser.add_argument("--metrics", required=True)


def run(args, params) -> None:
    start = time.perf_counter()
    counts = prepare_web(params.data.web, args.out, params.runtime.web_shard_size)
    metrics = counts.metrics()  # checks read = kept + Σ dropped
    write_json(args.metrics, metrics)
    seconds = time.perf_counter() - start
    print(
        f"prepare_web: {counts.source}: read {counts.read} segments of {counts.info.get('documents', 0)} "
        f"documents, kept {counts.kept}, dropped {metrics['dropped']} ({seconds:.1f}s, "
        f"{counts.read / max(seconds, 1e-9):.0f} segments/s)"
    )


main = stage("prepare_web", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
