"""Training examples: (instruction, output) pairs → chat-formatted token ids with the prompt masked out.

Text is built only by `prompts.format_example`, the function generation and scoring also use, and the prompt
is tokenized on its own exactly as a generation prefix is (`tokenizer(prompt, add_special_tokens=False)`),
so the ids a model is trained to continue are the ids it is later asked to continue.
`tokenize_example` is the one place where labels are masked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from humpback.prompts import Formatted, Origin, backward_example, format_example, system_for_training

IGNORE_INDEX = -100  # label value the causal-LM loss skips
ORIGINS: tuple[Origin, ...] = ("seed", "augmented")


@dataclass(frozen=True)
class TextExample:
    origin: Origin
    formatted: Formatted


def backward_examples(tokenizer, seed_pairs: Sequence[dict[str, Any]], max_output_tokens: int = 0) -> list[TextExample]:
    """The backward model Myx learns output → instruction: the user turn wraps the output (its first
    `max_output_tokens` tokens), the reply is the instruction. No system prompt (tags describe forward
    answers, not this task)."""
    return [
        TextExample("seed", backward_example(tokenizer, p["output"], max_output_tokens, instruction=p["instruction"]))
        for p in seed_pairs
    ]


def forward_examples(
    tokenizer,
    seed_pairs: Sequence[dict[str, Any]],
    augmented_pairs: Sequence[dict[str, Any]],
    tagging: bool,
) -> list[TextExample]:
    """M0/M1/M2 learn instruction → output; seed pairs carry S_a and augmented pairs S_w when tagging."""
    examples = []
    for origin, pairs in (("seed", seed_pairs), ("augmented", augmented_pairs)):
        system = system_for_training(origin, tagging)
        examples += [
            TextExample(origin, format_example(tokenizer, user=p["instruction"], response=p["output"], system=system))
            for p in pairs
        ]
    return examples


@dataclass
class DataReport:
    """Where every example went: sum(read) = sum(kept) + sum(dropped); truncated examples are among the kept."""

    read: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ORIGINS, 0))
    kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ORIGINS, 0))
    truncated: int = 0  # kept, with the response cut to fit max_seq_len
    dropped: dict[str, int] = field(default_factory=lambda: {"overlong": 0, "prompt_too_long": 0})

    def to_dict(self) -> dict[str, Any]:
        return {"read": self.read, "kept": self.kept, "truncated": self.truncated, "dropped": self.dropped}


def tokenize_example(
    tokenizer, example: Formatted, max_seq_len: int, overlong: Literal["truncate", "drop"]
) -> tuple[dict[str, list[int]] | None, str]:
    """→ ({"input_ids", "labels"} or None, status) with status one of ok, truncated, overlong, prompt_too_long.

    Labels are IGNORE_INDEX on every prompt token and equal the input ids on every completion token.
    """
    prompt_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    status = "ok"
    if len(prompt_ids) + len(completion_ids) > max_seq_len:
        # Truncating the prompt would train on a context that generation never sees; keep it whole and cut
        # the response. A prompt that leaves no room for one response token has nothing to train on.
        if len(prompt_ids) >= max_seq_len:
            return None, "prompt_too_long"
        if overlong == "drop":
            return None, "overlong"
        completion_ids = completion_ids[: max_seq_len - len(prompt_ids)]
        status = "truncated"
    return {
        "input_ids": prompt_ids + completion_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + list(completion_ids),
    }, status


class SFTDataset(torch.utils.data.Dataset):
    """Tokenized examples in memory (thousands of short lists: no need for Arrow)."""

    def __init__(self, items: list[dict[str, list[int]]], origins: list[Origin]):
        self.items = items
        self.origins = origins

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]

    @property
    def lengths(self) -> list[int]:
        return [len(item["input_ids"]) for item in self.items]


def build_dataset(
    tokenizer, examples: Sequence[TextExample], max_seq_len: int, overlong: Literal["truncate", "drop"]
) -> tuple[SFTDataset, DataReport]:
    report = DataReport()
    statuses: Counter[str] = Counter()
    items, origins = [], []
    for ex in examples:
        report.read[ex.origin] += 1
        item, status = tokenize_example(tokenizer, ex.formatted, max_seq_len, overlong)
        statuses[status] += 1
        if item is None:
            report.dropped[status] += 1
            continue
        report.kept[ex.origin] += 1
        items.append(item)
        origins.append(ex.origin)
    report.truncated = statuses["truncated"]
    return SFTDataset(items, origins), report


@dataclass(frozen=True)
class PadCollator:
    """Right-pad a batch to its longest example: pad positions get attention 0 and label IGNORE_INDEX."""

    pad_token_id: int

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[row, :n] = torch.tensor(f["input_ids"])
            attention_mask[row, :n] = 1
            labels[row, :n] = torch.tensor(f["labels"])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
