"""The curated pairs of each iteration as one Hugging Face dataset folder: `data/iteration_N.parquet` and a README
dataset card whose `configs` metadata names the splits, so `datasets.load_dataset(folder)` (or the Hub, once
published) reads it as is, split `iteration_N` being select@N's selection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Value
from huggingface_hub import DatasetCard, DatasetCardData

from humpback.curation import methods
from humpback.evaluation.export.cards import License, base_description, metadata_block, source_license
from humpback.storage.records import atomic_folder

# One row per curated pair; the provenance columns come from the web segment the output is.
FEATURES = Features(
    {
        "id": Value("string"),  # the augmented pair's id
        "instruction": Value("string"),  # written by the backward model
        "output": Value("string"),  # the web segment, verbatim
        "score": Value("float64"),  # the curator's score on the method's scale (null: curate.method none)
        "segment_id": Value("string"),
        "doc": Value("string"),  # the document the segment came from (path, URL, or <file>:<row>)
        "header": Value("string"),  # the segment's section header ("" for headerless text)
    }
)
COLUMN_WORDS = {
    "id": "the pair's id in the run",
    "instruction": "written by the backward model",
    "output": "the web segment, verbatim",
    "score": "the curator's score, on the method's scale",
    "segment_id": "the segment's id",
    "doc": "the document the segment came from",
    "header": 'the section header above the segment ("" for none)',
}


@dataclass(frozen=True)
class DatasetInfo:
    """What the card says beyond the data: where it came from and who chose it."""

    web_source: str  # data.web.source
    seed_source: str  # data.seed.source
    language: str  # data.web.language ("" = any)
    base: str  # base.model: the backward model's and the self-curators' base
    curator: str  # curate.model ("self": M0 rates for iteration 1, M1 for iteration 2)
    license: License


def curated_rows(selected: list[dict[str, Any]], segments: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The selection as dataset rows, each with its segment's provenance."""
    rows = []
    for r in selected:
        segment = segments.get(str(r.get("segment_id")), {})
        rows.append(
            {
                "id": str(r["id"]),
                "instruction": r["instruction"],
                "output": r["output"],
                "score": r.get("score"),
                "segment_id": str(r.get("segment_id", "")),
                "doc": str(segment.get("doc", "")),
                "header": str(segment.get("header", "")),
            }
        )
    return rows


def export_dataset(
    selections: dict[int, list[dict[str, Any]]],
    select_metrics: dict[int, dict[str, Any]],
    segments: dict[str, dict[str, Any]],
    info: DatasetInfo,
    out: str | Path,
) -> dict[str, int]:
    """Write the dataset folder atomically; return the rows per split."""
    counts = {}
    with atomic_folder(out) as tmp:
        for iteration, selected in sorted(selections.items()):
            split = f"iteration_{iteration}"
            dataset = Dataset.from_list(curated_rows(selected, segments), features=FEATURES)
            (tmp / "data").mkdir(exist_ok=True)
            dataset.to_parquet(str(tmp / "data" / f"{split}.parquet"))
            counts[split] = len(dataset)
        card = dataset_card(select_metrics, counts, info)
        card.save(tmp / "README.md")
    return counts


def _curator(info: DatasetInfo, iteration: int) -> str:
    if info.curator == "self":
        return f"M{iteration - 1} (self-curation: {'seed' if iteration == 1 else 'seed + iteration 1'} trained)"
    return f"`{info.curator}`"


def _level(m: dict[str, Any]) -> str:
    if m.get("method") == methods.NO_CURATION:
        return "none (every pair kept)"
    share = m.get("top_share", 1.0)
    return (
        f"score ≥ {m.get('threshold'):g}"
        + (f", the best {share:.0%}" if share < 1 else "")
        + (f", at most {m['cap']}" if m.get("cap") else "")
    )


def dataset_card(select_metrics: dict[int, dict[str, Any]], counts: dict[str, int], info: DatasetInfo) -> DatasetCard:
    """The README: Hub metadata (licence, splits as `configs`) and what a reader needs to trust the rows."""
    total = sum(counts.values())
    size = "n<1K" if total < 1000 else "1K<n<10K" if total < 10_000 else "10K<n<100K" if total < 100_000 else "n>100K"
    data = DatasetCardData(
        **info.license.card_fields(),
        language=[info.language] if info.language else None,
        task_categories=["text-generation"],
        size_categories=[size],
        pretty_name="Curated instruction pairs",
        tags=["instruction-backtranslation", "humpback", "synthetic", "self-curation"],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}.parquet"} for split in counts],
            }
        ],
    )
    used_methods = {m.get("method") for m in select_metrics.values()}
    lines = [
        "# Curated instruction pairs",
        "",
        (
            "Instruction–answer pairs made from unlabelled text by instruction backtranslation (Li et al., 2023, "
            "[Self-Alignment with Instruction Backtranslation](https://arxiv.org/abs/2308.06259)): a backward model, "
            "finetuned on seed pairs to write the instruction an answer responds to, wrote one for every text segment; "
            "the segment itself is the answer. A curator scored every pair and the pairs at the selection level were "
            "kept. Split `iteration_N` is the selection that trained model M_N."
        ),
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'pairs = load_dataset("PATH_OR_REPO_ID")  # splits: ' + ", ".join(counts),
        "```",
        "",
        "## Splits",
        "",
        "| split | curator | method | level | scored | kept |",
        "|---|---|---|---|---|---|",
    ]
    for iteration, m in sorted(select_metrics.items()):
        lines.append(
            f"| iteration_{iteration} | {_curator(info, iteration)} | {m.get('method')} | {_level(m)} | "
            f"{m.get('n')} | {counts.get(f'iteration_{iteration}', 0)} |"
        )
    lines += ["", "## Columns", "", *(f"- `{name}`: {words}" for name, words in COLUMN_WORDS.items()), ""]
    lines += [
        "## Sources and licences",
        "",
        f"- Outputs: `{info.web_source}` text; {source_license(info.web_source).words}.",
        f"- Instructions: written by a backward model finetuned from {base_description(info.base)}.",
        (
            f"- Seed pairs (they trained the backward model and the self-curators; not in this dataset): "
            f"`{info.seed_source}`; {source_license(info.seed_source).words}."
        ),
        f"- This dataset's licence: {info.license.words}.",
        "",
    ]
    lines += ["## Curation method", ""]
    for name in sorted(n for n in used_methods if n):
        if name == methods.NO_CURATION:
            lines.append("- `none`: no curator; every augmented pair is kept (the paper's unfiltered baseline).")
        else:
            spec = methods.method(name)
            lines.append(f"- `{name}`: {spec.summary} (scale: {spec.scale}).")
    lines += ["", "## Score histograms (every scored pair)", ""]
    for iteration, m in sorted(select_metrics.items()):
        histogram = m.get("histogram") or {}
        if not histogram:
            continue
        peak = max(histogram.values()) or 1
        lines += [f"### iteration_{iteration}", "", "| score from | pairs | |", "|---|---|---|"]
        lines += [f"| {low} | {n} | {'█' * round(20 * n / peak)} |" for low, n in histogram.items()]
        lines.append("")
    return DatasetCard(metadata_block(data) + "\n" + "\n".join(lines))
