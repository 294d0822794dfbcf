"""Answers to the evaluation prompts, in alpaca_eval's `model_outputs` format.

Each prompt is the model's chat template with the inference-time system prompt of the paper's ablation
(`respond.system_prompt`: none | S_a | S_a+S_w). Sampling follows `generation`; every record gets its own seed
from (seeds.generation, record id), so an answer does not change when other prompts are added or removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from humpback.engines.base import record_seed
from humpback.prompts import SystemPrompt, format_example, system_for_inference


def respond(
    engine, records: Sequence[dict[str, Any]], name: str, system_prompt: SystemPrompt, max_new_tokens: int, seed: int
) -> list[dict[str, Any]]:
    """Answer every record; rows in alpaca_eval's model_outputs format (+ our id and category)."""
    system = system_for_inference(system_prompt)
    prompts = [format_example(engine.tokenizer, user=r["instruction"], system=system).prompt for r in records]
    seeds = [record_seed(seed, r["id"]) for r in records]
    answers = engine.generate(prompts, max_new_tokens, seeds, desc=f"respond {name}")
    return [
        {
            "instruction": r["instruction"],
            "output": answer.strip(),
            "generator": name,
            "dataset": r.get("dataset", ""),
            "id": r["id"],
            "category": r.get("category", ""),
        }
        for r, answer in zip(records, answers)
    ]
