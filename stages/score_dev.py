"""Stage score_dev@{base,m0,m1,curator}: a curator rates every labelled dev pair with every curation method.

The expensive half of curation_quality (every read of the curator); no threshold is applied here, so moving a
threshold never reruns it. Curators: the untrained base, m0 and m1 (with the system prompt of their training:
`--tagged`), and `curator` (the model named by curate.model; skipped with a note while it is `self`).
"""

from __future__ import annotations

import logging
import sys

from humpback.curation.methods import writes_text
from humpback.engines.model_folders import is_self
from humpback.stage_runner import stage
from humpback.storage.records import iter_jsonl, write_jsonl

log = logging.getLogger("score_dev")


def arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="curator model folder (models/m0)")
    parser.add_argument(
        "--tagged",
        action="store_true",
        help="a model this project trained: prompt it with the system prompt of its training (S_a when train.tagging)",
    )
    parser.add_argument("--dev", required=True, help="labelled dev set (data/dev.jsonl)")
    parser.add_argument("--out", required=True, help="every dev row with each method's score (JSONL)")


def run(args, params) -> None:
    rows = [r for _, r in iter_jsonl(args.dev, required=("id", "instruction", "output", "kind"))]
    tagging = params.train.tagging and args.tagged
    if is_self(args.model):  # the `curator` item while curate.model is self: m0 and m1 are the curators
        write_jsonl(args.out, [])
        log.info("%s: curate.model is self, nothing to score", args.model)
        return
    # imported past the `self` early return: the curation and engine code imports torch and transformers
    from humpback.curation.curator import methods_to_run, score_dev_set
    from humpback.engines.factory import make_engine, stage_settings

    reads_only = not writes_text(methods_to_run(params))  # picks the precision `auto` means here
    engine = make_engine(args.model, stage_settings(params, "curate", reads_only))  # curate.engine, or generation's
    write_jsonl(args.out, score_dev_set(engine, rows, params, tagging=tagging, log=log))


main = stage("score_dev", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
