"""Eval source `alpaca-eval`: AlpacaEval's 805 prompts, optionally with a reference model's outputs.

`data.eval.path` empty reads `tatsu-lab/alpaca_eval` through `datasets` (its JSON files, not its loading
script, which recent `datasets` no longer runs); otherwise a local JSON file in alpaca_eval's format: a list
of {"instruction", "output", "generator", "dataset"}, as `alpaca_eval.json` and the `model_outputs` files
are. `data.eval.reference` picks the reference outputs carried along with each prompt:
`text_davinci_003` (AlpacaEval 1, `alpaca_eval.json`) or `gpt4_turbo` (AlpacaEval 2,
`alpaca_eval_gpt4_baseline.json`, whose rows alpaca_eval names `gpt4_1106_preview`: its AE2 leaderboard's
baseline row and length-controlled weights file `baseline_gpt4_1106_preview.csv`); a local file's `generator`
must then match that name, which the prompts carry on as `reference_generator`. `category` is the
prompt's source dataset (helpful_base, koala, oasst, selfinstruct, vicuna), so a `limit` takes prompts
from each in turn. Ids are `alpaca-eval/<index in the file>`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from humpback.params import EvalDataParams
from humpback.sources.counts import Counts, SourceError
from humpback.storage.records import RecordError

HUB_ID = "tatsu-lab/alpaca_eval"
HUB_FILES = {
    "none": "alpaca_eval.json",
    "text_davinci_003": "alpaca_eval.json",
    "gpt4_turbo": "alpaca_eval_gpt4_baseline.json",
}
# Generator names as alpaca_eval writes them in those files (and in its leaderboards).
GENERATORS = {"text_davinci_003": "text_davinci_003", "gpt4_turbo": "gpt4_1106_preview"}


def read_eval(params: EvalDataParams, counts: Counts) -> list[dict[str, Any]]:
    rows, where = _local(params.path) if params.path else _hub(params.reference)
    prompts = []
    for i, row in enumerate(rows):
        counts.read += 1
        try:
            prompt = _prompt(row, i, params, f"{where}: item {i}")
        except RecordError:
            if params.on_bad_record == "error":
                raise
            counts.drop("malformed")
            continue
        if not prompt["instruction"]:
            counts.drop("empty_instruction")
            continue
        prompts.append(prompt)
    return prompts


def _prompt(row: Any, i: int, params: EvalDataParams, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(row).__name__}")
    instruction = row.get(params.instruction_field)
    if not isinstance(instruction, str):
        raise RecordError(f"{where}: field '{params.instruction_field}' must be a string")
    dataset = row.get("dataset")
    prompt = {
        "id": f"alpaca-eval/{i}",
        "instruction": instruction.strip(),
        "dataset": "alpaca-eval",
        "category": dataset if isinstance(dataset, str) else "",
    }
    if params.reference != "none":
        output, generator = row.get("output"), row.get("generator")
        if not isinstance(output, str):
            raise RecordError(f"{where}: field 'output' (the reference answer) must be a string")
        expected = GENERATORS[params.reference]
        if generator is not None and generator != expected:
            raise RecordError(
                f"{where}: reference generator is {generator!r}, but data.eval.reference asks for {expected!r}"
            )
        prompt.update(reference=output, reference_generator=expected)
    return prompt


def _local(path: str) -> tuple[list, str]:
    file = Path(path)
    if not file.is_file():
        raise SourceError(f"data.eval.path: file not found: {path} (source 'alpaca-eval' needs a JSON file)")
    try:
        rows = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(rows, list):
        raise RecordError(f"{path}: expected a JSON list of prompts (alpaca_eval's format), got {type(rows).__name__}")
    return rows, path


def _hub(reference: str) -> tuple[list, str]:
    import datasets  # imported here: slow to import, and only the hub path needs it

    url = f"hf://datasets/{HUB_ID}/{HUB_FILES[reference]}"
    try:
        split = datasets.load_dataset("json", data_files=url, split="train")
    except Exception as exc:  # noqa: BLE001 (hub failures come as many types) say what was tried, and the way round
        raise SourceError(
            f"alpaca-eval: cannot load {url} ({type(exc).__name__}: {exc}); download it and set "
            "data.eval.path to the JSON file"
        ) from None
    return list(split), url
