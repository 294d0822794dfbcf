"""Stage prepare_curator: resolve `curate.model` into models/curator, as prepare_base does for `base.model`.

`curate.model: self` (the paper) needs no model: the folder then holds only a README saying the curators are
m0 and m1, so the curate stages can always depend on it. Any other reference (a GGUF in a package, a split
GGUF verified by its sha256, a folder, a hub id) is converted once here, not in every stage that uses it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from humpback.modeling import ModelSourceError, atomic_folder
from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, load_params
from stages.prepare_base import prepare_base

log = logging.getLogger("prepare_curator")

SELF_NOTE = ("# No named curator\n\n`curate.model: self`: curate@1 is rated by m0 and curate@2 by m1 (the paper's "
             "self-curation). Set `curate.model` to a model reference to curate with another model.\n")


SELF_MARKER = "SELF_CURATOR"  # the one file (beside the README) of the placeholder folder


def prepare_curator(ref: str, dtype: str, out: str | Path) -> Path:
    if ref == "self":
        with atomic_folder(out) as tmp:
            (tmp / "README.md").write_text(SELF_NOTE, encoding="utf-8")
            (tmp / SELF_MARKER).write_text("self\n", encoding="utf-8")
        return Path(out)
    return prepare_base(ref, dtype, out)


def is_self(folder: str | Path) -> bool:
    """Whether a prepared curator folder is the `self` placeholder (not a model, not an adapter)."""
    return (Path(folder) / SELF_MARKER).is_file()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="model folder to write (models/curator)")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    try:
        params = load_params(args.params)
        start = time.perf_counter()
        prepare_curator(params.curate.model, params.base.dtype, args.out)
    except (ModelSourceError, ParamsError, ImportError) as exc:
        print(f"prepare_curator: {exc}", file=sys.stderr)
        return 1
    log.info("%s -> %s in %.1f s", params.curate.model, args.out, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
