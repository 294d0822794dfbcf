"""Stage prepare_base: resolve `base.model` into a plain safetensors folder (weights, tokenizer, chat template).

The folder also gets a README.md model card: the source reference, and for a split GGUF the verified sha256 and
the licence when it is known (see humpback/engines/model_folders.py).
"""

from __future__ import annotations

import logging
import sys
import time

from humpback.engines.model_folders import prepare_model
from humpback.stage_runner import stage

log = logging.getLogger("prepare_base")


def arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="model folder to write (models/base)")


def run(args, params) -> None:
    start = time.perf_counter()
    prepare_model(params.base.model, params.base.dtype, args.out)
    log.info("%s -> %s in %.1f s", params.base.model, args.out, time.perf_counter() - start)


main = stage("prepare_base", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
