"""Stage prepare_other: held-out human Q/A from a source never trained on, minus anything the run reads."""

from __future__ import annotations

import argparse
import itertools
import time

from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, load_params
from humpback.records import RecordError, iter_jsonl, write_json, write_jsonl
from humpback.sources import SourceError, prepare_other


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--training", nargs="+", required=True,
                    help="what the run trains, curates or tunes on: seed pairs, held-out seed pairs, web segments")
    ap.add_argument("--out", required=True, help="held-out pairs (JSONL: id, instruction, output, source, category)")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = ap.parse_args(argv)

    start = time.perf_counter()
    try:
        params = load_params(args.params)
        training = (row for _, row in itertools.chain.from_iterable(iter_jsonl(p) for p in args.training))
        pairs, counts = prepare_other(params.data.other, training)
    except (ParamsError, SourceError, RecordError, NotImplementedError) as exc:
        raise SystemExit(f"prepare_other: error: {exc}") from None
    metrics = counts.metrics()  # checks read = kept + Σ dropped before anything is written
    write_jsonl(args.out, pairs)
    write_json(args.metrics, metrics)
    print(f"prepare_other: {counts.source}: read {counts.read}, kept {counts.kept}, dropped {metrics['dropped']} "
          f"({time.perf_counter() - start:.1f}s)")


if __name__ == "__main__":
    main()
