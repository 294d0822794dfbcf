"""Stage prepare_base: resolve `base.model` into a plain safetensors folder (weights, tokenizer, chat template).

The folder also gets a README.md model card: the source reference, and for a split GGUF the verified
sha256 and the licence when it is known.

Every later stage loads `models/base` (or an adapter on it) the same fast way, whatever the reference was:
a GGUF inside an installed package is dequantized once here, not in every stage.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from humpback.modeling import ModelSourceError, atomic_folder, load_reference, model_card, save_model
from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, load_params

log = logging.getLogger("prepare_base")


def prepare_base(ref: str, dtype: str, out: str | Path) -> Path:
    """Load `ref` as an unquantized transformers model and save it to `out` atomically."""
    model, tokenizer = load_reference(ref, dtype)
    with atomic_folder(out) as tmp:
        save_model(model, tokenizer, tmp)
        (tmp / "README.md").write_text(model_card(ref), encoding="utf-8")
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="model folder to write (models/base)")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    try:
        params = load_params(args.params)
        start = time.perf_counter()
        prepare_base(params.base.model, params.base.dtype, args.out)
    except (ModelSourceError, ParamsError, ImportError) as exc:
        # A wrong reference or a missing package (the model's, or `gguf`) is a setup problem, not a bug:
        # say what to do, without a traceback.
        print(f"prepare_base: {exc}", file=sys.stderr)
        return 1
    log.info("%s -> %s in %.1f s", params.base.model, args.out, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
