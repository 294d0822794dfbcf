"""Stage prepare_seed: the seed source → training pairs, held-out pairs (never trained on), counts."""

from __future__ import annotations

import argparse
import time

from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, load_params
from humpback.records import RecordError, write_json, write_jsonl
from humpback.sources import SourceError, prepare_seed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="training pairs (JSONL)")
    ap.add_argument("--heldout-out", required=True, help="held-out pairs: the curation dev set's positives")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = ap.parse_args(argv)

    start = time.perf_counter()
    try:
        params = load_params(args.params)
        train, heldout, counts = prepare_seed(params.data.seed, params.base.seed)
    except (ParamsError, SourceError, RecordError, NotImplementedError) as exc:
        raise SystemExit(f"prepare_seed: error: {exc}") from None
    metrics = counts.metrics()  # checks read = kept + Σ dropped before anything is written
    write_jsonl(args.out, train)
    write_jsonl(args.heldout_out, heldout)
    write_json(args.metrics, metrics)
    print(
        f"prepare_seed: {counts.source}: read {counts.read}, train {len(train)}, heldout {len(heldout)}, "
        f"dropped {metrics['dropped']} ({time.perf_counter() - start:.1f}s)"
    )


if __name__ == "__main__":
    main()
