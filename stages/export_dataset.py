"""Stage export_dataset: each iteration's curated pairs as one Hugging Face dataset folder with a dataset card
(Parquet splits iteration_N; `datasets.load_dataset(folder)` reads it as is). Publish it with
`python -m humpback.evaluation.export.publish FOLDER --repo-id OWNER/NAME` (docs/export.md)."""

from __future__ import annotations

import sys

from humpback.evaluation.export.cards import dataset_license
from humpback.evaluation.export.dataset import DatasetInfo, export_dataset
from humpback.stage_runner import stage
from humpback.storage.records import iter_jsonl, read_json


def arguments(parser) -> None:
    parser.add_argument("--selected", nargs="+", required=True, help="data/curated/N/selected.jsonl, N = 1, 2, ...")
    parser.add_argument("--select-metrics", nargs="+", required=True, help="metrics/select/N.json, N as in --selected")
    parser.add_argument("--web", required=True, help="the sampled web segments, for each pair's provenance")
    parser.add_argument("--out", required=True, help="the dataset folder")


def run(args, params) -> None:
    if len(args.selected) != len(args.select_metrics):
        raise ValueError("--selected and --select-metrics must name the same iterations, in the same order")
    selections = {
        i: [r for _, r in iter_jsonl(path, required=("id", "instruction", "output"))]
        for i, path in enumerate(args.selected, start=1)
    }
    metrics = {i: read_json(path) for i, path in enumerate(args.select_metrics, start=1)}
    segments = {str(r["id"]): r for _, r in iter_jsonl(args.web, required=("id",))}
    web = params.data.web
    info = DatasetInfo(
        web_source=web.source,
        seed_source=params.data.seed.source,
        language=web.language,
        base=params.base.model,
        curator=params.curate.model,
        license=dataset_license(web.source, params.export.dataset_license),
    )
    counts = export_dataset(selections, metrics, segments, info, args.out)
    print(f"export_dataset: {counts} -> {args.out}")


main = stage("export_dataset", __doc__, arguments, run)

if __name__ == "__main__":
    sys.exit(main())
