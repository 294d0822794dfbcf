"""Stage export_model@<model> (one per `export.models` entry): the trained model as a standalone transformers folder,
LoRA merged into the base, safetensors in the base's dtype, with a model card carrying the run's measured
differences. Publish it with `python -m humpback.evaluation.export.publish FOLDER --repo-id OWNER/NAME`
(docs/export.md)."""

from __future__ import annotations

import sys

from humpback.evaluation.export.model import ModelInfo, export_model
from humpback.stage_runner import stage
from humpback.storage.records import read_json


def arguments(parser) -> None:
    parser.add_argument("--name", required=True, help="the model's name in the run (m0, m1, m2)")
    parser.add_argument("--model", required=True, help="the trained model folder (an adapter or a full model)")
    parser.add_argument("--base", required=True, help="the base model folder the adapter was trained on")
    parser.add_argument(
        "--comparisons", required=True, help="the run's paired comparisons (metrics/comparisons.json), for the card"
    )
    parser.add_argument("--out", required=True, help="the standalone model folder")


def run(args, params) -> None:
    info = ModelInfo(
        name=args.name,
        base=params.base.model,
        seed_source=params.data.seed.source,
        web_source=params.data.web.source,
        tagging=params.train.tagging,
        system_prompt=params.respond.system_prompt,
    )
    export_model(args.model, args.base, read_json(args.comparisons), info, params.export.dtype, args.out)
    print(f"export_model: {args.name} -> {args.out}")


main = stage("export_model", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
