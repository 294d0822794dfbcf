"""Stage prepare_eval: the evaluation source → prompts (a category-balanced subset under a limit), counts."""

from __future__ import annotations

import argparse
import time

from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, load_params
from humpback.records import RecordError, write_json, write_jsonl
from humpback.sources import SourceError, prepare_eval


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="evaluation prompts (JSONL)")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = ap.parse_args(argv)

    start = time.perf_counter()
    try:
        params = load_params(args.params)
        prompts, counts = prepare_eval(params.data.eval)
    except (ParamsError, SourceError, RecordError, NotImplementedError) as exc:
        raise SystemExit(f"prepare_eval: error: {exc}") from None
    metrics = counts.metrics()  # checks read = kept + Σ dropped before anything is written
    write_jsonl(args.out, prompts)
    write_json(args.metrics, metrics)
    print(
        f"prepare_eval: {counts.source}: read {counts.read}, kept {counts.kept}, "
        f"dropped {metrics['dropped']} ({time.perf_counter() - start:.1f}s)"
    )


if __name__ == "__main__":
    main()
