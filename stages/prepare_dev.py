"""Stage prepare_dev: the labelled curation dev set, from held-out seed pairs and web page headers.

Positives are held-out (question, human answer) pairs; negatives are the failure kinds of the paper's rubric
(see humpback/devset.py). The held-out pairs never reach training, so curators are scored on unseen data.
"""

from __future__ import annotations

import argparse
import logging
import sys

from humpback.devset import DevSetError, build_dev_set, dev_set_counts
from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, load_params
from humpback.records import RecordError, iter_jsonl, write_json, write_jsonl

log = logging.getLogger("prepare_dev")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", required=True, help="held-out seed pairs (data/seed_heldout.jsonl)")
    parser.add_argument("--web", required=True, help="web segments, for real page headers (data/web.jsonl)")
    parser.add_argument("--out", required=True, help="dev set to write (data/dev.jsonl)")
    parser.add_argument("--metrics", required=True, help="counts to write (metrics/prepare_dev.json)")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    try:
        params = load_params(args.params)
        heldout = [r for _, r in iter_jsonl(args.heldout, required=("id", "instruction", "output"))]
        web = [r for _, r in iter_jsonl(args.web, required=("id", "text"))]
        quality = params.curation_quality
        rows = build_dev_set(heldout, web, quality.positives, quality.negatives_per_kind, params.base.seed)
    except (ParamsError, RecordError, DevSetError) as exc:
        print(f"prepare_dev: {exc}", file=sys.stderr)
        return 1

    write_jsonl(args.out, rows)
    counts = dev_set_counts(rows)
    used = counts["by_kind"]["good"]
    # Every held-out pair is accounted for: used as a positive, or left out by curation_quality.positives
    # (it may still lend its question to a negative).
    write_json(args.metrics, {
        "read": len(heldout),
        "kept": used,
        "dropped": {"beyond_positives": len(heldout) - used},
        "web_read": len(web),
        **counts,
    })
    log.info("%d rows (%s) from %d held-out pairs", counts["rows"], counts["by_kind"], len(heldout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
