"""Stage prepare_curator: resolve `curate.model` into models/curator, as prepare_base does for `base.model`.

`curate.model: self` (the paper) writes a placeholder folder: the curators are then m0 and m1.
"""

from __future__ import annotations

import logging
import sys
import time

from humpback.engines.model_folders import prepare_curator
from humpback.stage_runner import stage

log = logging.getLogger("prepare_curator")


def arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="model folder to write (models/curator)")


def run(args, params) -> None:
    start = time.perf_counter()
    prepare_curator(params.curate.model, params.base.dtype, args.out)
    log.info("%s -> %s in %.1f s", params.curate.model, args.out, time.perf_counter() - start)


main = stage("prepare_curator", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
