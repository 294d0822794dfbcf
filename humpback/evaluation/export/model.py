"""A trained model as a standalone transformers folder: the LoRA adapter merged into its base (peft's
`merge_and_unload`), saved as safetensors in the base's dtype (or `export.dtype`), with the tokenizer, its chat
template and a README model card. Loads with `AutoModelForCausalLM.from_pretrained(folder)`, no peft needed.

The merge runs in float32 and casts once at the end, so a bf16 export rounds each weight once, not the base and
the LoRA product separately.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from humpback.engines.models import DTYPES, config_of, is_adapter
from humpback.evaluation.export.cards import (
    HUB_ORIGINALS,
    base_description,
    base_license,
    metadata_block,
    source_license,
)
from humpback.storage.records import atomic_folder, read_json

ROLE_WORDS = {
    "m0": "M0: the base finetuned on the seed pairs alone",
    "m1": "M1: the base finetuned on the seed pairs + the pairs M0 kept (iteration 1)",
    "m2": "M2 (Humpback): the base finetuned on the seed pairs + the pairs M1 kept (iteration 2)",
}
INSTRUMENT_WORDS = {
    "loglik_other": "log-likelihood of human answers from a source the pipeline never reads",
    "loglik_seed": "log-likelihood of held-out seed answers",
    "judged": "held-out questions judged head to head (win-rate points above 50)",
}


@dataclass(frozen=True)
class ModelInfo:
    name: str  # m0 | m1 | m2
    base: str  # base.model
    seed_source: str  # data.seed.source
    web_source: str  # data.web.source
    tagging: bool  # train.tagging: whether training pairs carried S_a / S_w
    system_prompt: str  # respond.system_prompt: what the run's evaluation answered with (none | S_a | S_a+S_w)


def export_dtype(chosen: str, base_dir: str | Path) -> torch.dtype:
    """`export.dtype`, where `base` means the dtype the base folder is stored in."""
    if chosen != "base":
        return DTYPES[chosen]
    stored = getattr(config_of(base_dir), "dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored)
    return stored or torch.float32


def merged_model(model_dir: str | Path, base_dir: str | Path, dtype: torch.dtype) -> PreTrainedModel:
    """The model of `model_dir` as one plain transformers model: an adapter merged into `base_dir`'s weights."""
    if is_adapter(model_dir):
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, model_dir).merge_and_unload()
    else:  # train.method full: the folder is the model already
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.to(dtype).eval()


def export_model(
    model_dir: str | Path,
    base_dir: str | Path,
    comparisons: dict[str, Any],
    info: ModelInfo,
    dtype: str,
    out: str | Path,
) -> Path:
    """Write the merged model folder with its card to `out`, atomically."""
    torch_dtype = export_dtype(dtype, base_dir)
    model = merged_model(model_dir, base_dir, torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    training = read_json(Path(model_dir) / "card.json") if (Path(model_dir) / "card.json").is_file() else {}
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        model_card(
            info, training, comparisons, str(torch_dtype).removeprefix("torch."), merged=is_adapter(model_dir)
        ).save(tmp / "README.md")
    return Path(out)


def _comparisons(comparisons: dict[str, Any], name: str) -> list[str]:
    rows = []
    for pair, by_instrument in comparisons.items():
        a, b = pair.split("_vs_")
        if name not in (a, b):
            continue
        for instrument, c in by_instrument.items():
            tells = "yes" if c["ci_low"] > 0 or c["ci_high"] < 0 else "no"
            rows.append(
                f"| {a.upper()} − {b.upper()} | {INSTRUMENT_WORDS.get(instrument, instrument)} | "
                f"{c['difference']:+.4g} | [{c['ci_low']:+.4g}, {c['ci_high']:+.4g}] | {c['n']} | {tells} |"
            )
    return rows


def inference_words(info: ModelInfo) -> str:
    """How the model was tagged in training and which system prompt this run's evaluation answered with, so a
    user prompts it as it was measured (`train.tagging`, `respond.system_prompt`)."""
    from humpback.prompts import system_for_inference

    trained = (
        "Training tagged seed pairs with the system prompt S_a and web pairs with S_w (`train.tagging`)"
        if info.tagging
        else "Trained without system prompts (`train.tagging` false)"
    )
    text = system_for_inference(info.system_prompt)
    answered = (
        f'this run\'s evaluation answered with the system prompt "{text}" (`respond.system_prompt` '
        f"{info.system_prompt})"
        if text
        else "this run's evaluation answered with no system prompt"
    )
    return f"{trained}; {answered}."


def model_card(
    info: ModelInfo, training: dict[str, Any], comparisons: dict[str, Any], dtype: str, merged: bool
) -> ModelCard:
    """The README: Hub metadata (base model, licence) and how the model was made and measured."""
    license_ = base_license(info.base)
    data = ModelCardData(
        **license_.card_fields(),
        base_model=HUB_ORIGINALS.get(info.base),
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["instruction-backtranslation", "humpback", "self-curation", "lora-merged" if merged else "full-finetune"],
    )
    lines = [
        f"# {info.name}: instruction backtranslation",
        "",
        (
            f"{ROLE_WORDS.get(info.name, info.name)}, trained by humpback, an implementation of Li et al. (2023), "
            "[Self-Alignment with Instruction Backtranslation](https://arxiv.org/abs/2308.06259). "
            + ("The LoRA adapter is merged into the base weights" if merged else "A full finetune")
            + f"; weights in {dtype}, safetensors. Loads with transformers alone:"
        ),
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO_ID")',
        'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO_ID")  # with the chat template it was trained on',
        "```",
        "",
        inference_words(info),
        "",
        "## Base model and data",
        "",
        f"- Base: {base_description(info.base)}; licence: {license_.words}.",
        f"- Seed pairs: `{info.seed_source}`; {source_license(info.seed_source).words}.",
        (
            f"- Web text (the curated pairs' answers): `{info.web_source}`; {source_license(info.web_source).words}."
            if info.name != "m0"
            else "- M0 trains on the seed pairs alone."
        ),
    ]
    if training:
        lines.append(
            f"- Examples: {training.get('examples')} ({training.get('examples_seed')} seed + "
            f"{training.get('examples_augmented')} curated web pairs), {training.get('steps')} steps, "
            f"{training.get('epochs')} passes, final loss {training.get('final_loss', 0):.3f}."
        )
    lines.append("")
    rows = _comparisons(comparisons, info.name)
    if rows:
        lines += [
            "## Measured (this run)",
            "",
            (
                "Paired differences over the same questions, bootstrap 95% intervals (nats/token for the "
                "likelihoods; +0.01 = the human answers about 1% likelier per token)."
            ),
            "",
            "| comparison | instrument | difference | 95% interval | n | tells |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    params = training.get("params") or {}
    if params:
        lines += [
            "## Training params",
            "",
            "| key | value |",
            "|---|---|",
            *(f"| `{key}` | `{json.dumps(value)}` |" for key, value in sorted(params.items())),
            "",
        ]
    return ModelCard(metadata_block(data) + "\n" + "\n".join(lines))
