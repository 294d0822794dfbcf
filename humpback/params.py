"""params.yaml → frozen dataclasses.

Every stage reads its parameters through `load_params()`. The loader is strict on purpose: an unknown key
is almost always a typo (`curate.treshold`) that would otherwise be silently ignored, and a missing key
means the file and the code disagree. Both fail with the dotted key and the file named.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_PARAMS_FILE = "params.yaml"


class ParamsError(ValueError):
    """A params file that does not match the schema below."""


# --------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class BaseParams:
    model: str  # gguf:<package>/<file> | local folder | hub id
    dtype: Literal["float32", "bfloat16", "float16"]
    seed: int


@dataclass(frozen=True)
class SeedDataParams:
    source: Literal["python-faq", "jsonl", "oasst1"]
    path: str  # docs root for python-faq ("" = Debian's default), the file for jsonl; oasst1: "" = the hub
    instruction_field: str
    output_field: str
    language: str  # oasst1: keep conversation trees whose first turn is in this language ("" = any)
    limit: int  # 0 = all
    heldout: int  # pairs held out of training for the curation dev set
    on_bad_record: Literal["error", "skip"]


@dataclass(frozen=True)
class WebDataParams:
    source: Literal["python-docs", "jsonl", "html", "warc", "parquet"]
    path: str
    text_field: str
    min_chars: int
    max_chars: int
    max_repetition: float  # drop a segment when this share of its text repeats an earlier word 5-gram (1 = off)
    language: str  # keep segments detected as this ISO 639-1 language ("" = any)
    near_duplicate: float  # MinHash Jaccard similarity at which a segment is a near-duplicate (0 = off)
    shard_size: int  # documents per resumable shard
    limit: int  # deterministic sample size, 0 = all
    on_bad_record: Literal["error", "skip"]


@dataclass(frozen=True)
class EvalDataParams:
    source: Literal["mt-bench", "jsonl", "alpaca-eval"]
    path: str
    instruction_field: str
    reference: Literal["none", "text_davinci_003", "gpt4_turbo"]  # alpaca-eval: reference outputs to carry
    limit: int
    on_bad_record: Literal["error", "skip"]


@dataclass(frozen=True)
class DataParams:
    seed: SeedDataParams
    web: WebDataParams
    eval: EvalDataParams


@dataclass(frozen=True)
class LoraParams:
    r: int
    alpha: int
    dropout: float
    target_modules: list[str]


@dataclass(frozen=True)
class TrainParams:
    method: Literal["lora", "full"]
    tagging: bool  # S_a on seed pairs, S_w on augmented pairs (paper's "tags")
    max_seq_len: int
    overlong: Literal["truncate", "drop"]
    backward_max_output_tokens: int  # the backward model reads this much of an output (0 = all), in training and augment
    epochs: float  # passes over the model's own examples; 0 = the paper's steps-by-data-size table
    batch_size: int  # 0 = the paper's rule (32, or 8 under 3,000 examples)
    micro_batch_size: int
    learning_rate: float
    final_learning_rate: float
    weight_decay: float
    dropout: float
    warmup_steps: int
    save_steps: int
    # auto = bfloat16 compute where bf16 matmuls are fast for training (training.compute_dtype), else float32
    dtype: Literal["auto", "float32", "bfloat16"]
    lora: LoraParams


@dataclass(frozen=True)
class GenerationParams:
    engine: Literal["transformers", "vllm", "openai"]
    # auto = bfloat16 where this machine has fast bf16 kernels (modeling.resolve_dtype), else float32
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    token_budget: int  # prompt + new tokens per batch for the transformers engine
    temperature: float
    top_p: float
    base_url: str  # openai engine
    api_model: str  # openai engine: the served model's name
    concurrency: int  # openai engine
    tensor_parallel_size: int  # vllm engine


@dataclass(frozen=True)
class AugmentParams:
    max_new_tokens: int
    max_instruction_chars: int
    echo_overlap: float  # drop an instruction when this share of its words comes straight from the segment
    filters: list[Literal["empty", "echo", "too_long", "not_instruction"]]  # post-filters applied, in order
    shard_size: int


# How a curator scores a pair (see humpback/scoring.py for each method's score and its scale).
CurateMethod = Literal["logprob", "generate", "rubric_calibrated", "yes_no", "likelihood_gain", "pmi"]
CURATE_METHODS: tuple[str, ...] = typing.get_args(CurateMethod)


@dataclass(frozen=True)
class CurateThresholds:
    """One threshold per method, each on its method's own scale: switching `curate.method` never applies a
    threshold meant for another scale. A pair is kept when its score >= the method's threshold."""

    logprob: float  # expected rubric score, 1..5
    generate: float  # parsed rubric score, 1..5
    rubric_calibrated: float  # log (P(4)+P(5)) / (P(1)+P(2)) of the rubric read, nats; 0 = as likely good as bad
    yes_no: float  # P(Yes) / (P(Yes)+P(No)), 0..1
    likelihood_gain: float  # nats per answer token the instruction adds to the answer's log-likelihood
    pmi: float  # nats in all the instruction adds to the answer's log-likelihood


@dataclass(frozen=True)
class CurateParams:
    model: str  # "self" (the paper: M0 curates for M1, M1 for M2) or a model reference (see modeling.py)
    method: CurateMethod
    threshold: CurateThresholds
    max_new_tokens: int
    max_retries: int
    max_pair_chars: int
    shard_size: int

    def threshold_for(self, method: str | None = None) -> float:
        """The selection threshold of `method` (default: the configured method)."""
        return getattr(self.threshold, method or self.method)


@dataclass(frozen=True)
class RespondParams:
    system_prompt: Literal["none", "S_a", "S_a+S_w"]
    max_new_tokens: int


@dataclass(frozen=True)
class EvaluateParams:
    judge: Literal["local", "openai", "openai-compatible"]
    judge_model: str  # "base" = models/base; else a folder, hub id or openai model name
    base_url: str
    reference: str  # a respond item (e.g. "base") or a path to an alpaca_eval outputs JSON
    max_chars: int  # outputs are cut to this many characters before judging (local judge context)
    # local judge: "pairwise" = alpaca_eval's prompt with both answers, read from P("m") vs P("M"); or a
    # curate method (or "length"): each answer scored alone by that method, the higher score wins
    judge_read: Literal["pairwise", "length", CurateMethod]


@dataclass(frozen=True)
class CurationQualityParams:
    positives: int
    negatives_per_kind: int
    methods: list[CurateMethod]  # scored on the dev set besides curate.method; answer length is always the baseline
    bootstrap: int  # resamples for the ROC-AUC 95% interval


@dataclass(frozen=True)
class Params:
    base: BaseParams
    data: DataParams
    train: TrainParams
    generation: GenerationParams
    augment: AugmentParams
    curate: CurateParams
    respond: RespondParams
    evaluate: EvaluateParams
    curation_quality: CurationQualityParams

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------- loader


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate a params file; raise `ParamsError` naming the file and the dotted key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, source=str(path))


def parse_params(raw: Any, source: str = "<params>") -> Params:
    return _build(Params, raw, source, prefix="")


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: '{where}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ParamsError(
            f"{source}: unknown key '{prefix}{unknown[0]}' (allowed in '{where}': {', '.join(names)})"
        )
    missing = [n for n in names if n not in raw]
    if missing:
        raise ParamsError(f"{source}: missing key '{prefix}{missing[0]}'")
    values = {n: _coerce(hints[n], raw[n], source, f"{prefix}{n}") for n in names}
    return cls(**values)


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, prefix=key + ".")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ParamsError(f"{source}: '{key}' must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ParamsError(f"{source}: '{key}' must be a list, got {type(value).__name__}")
        return [_coerce(item_tp, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(option, value, source, key)
            except ParamsError:
                continue
        raise ParamsError(f"{source}: '{key}' has the wrong type: {value!r}")
    if tp is type(None):
        if value is not None:
            raise ParamsError(f"{source}: '{key}' must be null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        # YAML reads 1e-5 as a string (no dot in the mantissa); accept numeric strings for floats only.
        if isinstance(value, bool):
            raise ParamsError(f"{source}: '{key}' must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ParamsError(f"{source}: '{key}' must be a number, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"params schema uses an unsupported type {tp!r} at '{key}'")


__all__ = ["CURATE_METHODS", "Params", "ParamsError", "load_params", "parse_params"]
