"""Stage sample_web: `data.web.limit` segments of the web pool (0 = all), drawn with `seeds.sampling`."""

from __future__ import annotations

import sys

from humpback.sources.sampling import sample_web
from humpback.stage_runner import stage
from humpback.storage.records import write_json


def arguments(parser) -> None:
    parser.add_argument("--pool", required=True, help="every kept segment (data/web_pool.jsonl)")
    parser.add_argument("--out", required=True, help="the sample (data/web.jsonl)")
    parser.add_argument("--metrics", required=True)


def run(args, params) -> None:
    counts = sample_web(args.pool, params.data.web.limit, params.seeds.sampling, args.out)
    write_json(args.metrics, counts)
    print(f"sample_web: {counts['kept']} of {counts['read']} segments -> {args.out}")


main = stage("sample_web", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
