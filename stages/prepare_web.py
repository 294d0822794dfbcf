"""Stage prepare_web: the web source → header-anchored, filtered, deduplicated, sampled segments, counts.

Streams the corpus in resumable shards (see humpback/sources/web.py); prints its throughput.
"""

from __future__ import annotations

import argparse
import time

from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, load_params
from humpback.records import RecordError, write_json
from humpback.sources import SourceError, prepare_web


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="segments (JSONL)")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = ap.parse_args(argv)

    start = time.perf_counter()
    try:
        params = load_params(args.params)
        counts = prepare_web(params.data.web, params.base.seed, args.out)
    except (ParamsError, SourceError, RecordError, NotImplementedError) as exc:
        raise SystemExit(f"prepare_web: error: {exc}") from None
    metrics = counts.metrics()  # checks read = kept + Σ dropped
    write_json(args.metrics, metrics)
    seconds = time.perf_counter() - start
    print(
        f"prepare_web: {counts.source}: read {counts.read} segments of {counts.info.get('documents', 0)} "
        f"documents, kept {counts.kept}, dropped {metrics['dropped']} ({seconds:.1f}s, "
        f"{counts.read / max(seconds, 1e-9):.0f} segments/s)"
    )


if __name__ == "__main__":
    main()
