"""Generation engines behind one interface: in-process transformers (default), vLLM, OpenAI-compatible.

Every stage that makes a model write or score text goes through `make_engine(model_dir, params)`; the engines
live in `humpback/engines/`. What they share:
- prompts are already formatted (`prompts.format_example(...).prompt`) and are tokenized exactly as training
  tokenizes a prefix (`add_special_tokens=False`), so the model continues the text it was trained on;
- generation stops at the template's end-of-turn token (and eos);
- each prompt carries its own seed, so a record's output does not depend on which other records share its
  batch, shard or server: a resumed or re-batched run gives the same text;
- results come back in input order.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from humpback.params import GenerationParams, RuntimeParams


class Engine(Protocol):
    tokenizer: object  # a transformers PreTrainedTokenizerBase: formats prompts with the model's template

    def generate(self, prompts: list[str], max_new_tokens: int, seeds: list[int], *,
                 temperature: float | None = None, top_p: float | None = None, desc: str = "") -> list[str]:
        """One completion per prompt (temperature 0 = greedy; None = the params' value)."""
        ...

    def next_token_logprobs(self, prompts: list[str], candidates: list[str], *,
                            desc: str = "") -> list[list[float]]:
        """log P(first token of each candidate | prompt): one row per prompt, candidates in order."""
        ...

    def completion_logprobs(self, prompts: list[str], completions: list[str], *,
                            desc: str = "") -> list[list[float]]:
        """log P(token | prompt, earlier completion tokens) for every token of each completion, with prompt and
        completion tokenized separately as training tokenizes them (the openai engine needs a server that
        returns prompt log-probabilities for token-id prompts, as vLLM does)."""
        ...


def make_engine(model_dir: str | Path, params: GenerationParams, runtime: RuntimeParams) -> Engine:
    """The engine named by `params.engine`, run as `runtime` says (batch budget, server, concurrency); heavy
    dependencies are imported only for the one chosen."""
    if params.engine == "transformers":
        from humpback.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model_dir, params, runtime)
    if params.engine == "vllm":
        from humpback.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model_dir, params, runtime)
    if params.engine == "openai":
        from humpback.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(model_dir, params, runtime)
    raise ValueError(f"generation.engine: unknown engine '{params.engine}'")


def resolve_sampling(params: GenerationParams, prompts: list[str], seeds: list[int],
                     temperature: float | None, top_p: float | None) -> tuple[float, float]:
    """Every engine's `generate` preamble: one seed per prompt, and the params' sampling unless overridden."""
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    return (params.temperature if temperature is None else temperature,
            params.top_p if top_p is None else top_p)


def record_seed(seed: int, *parts: object) -> int:
    """A 31-bit sampling seed from the global seed and a record's identity (stable across runs and machines).

    31 bits because every backend accepts it (torch, vLLM, OpenAI-compatible servers)."""
    key = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF


__all__ = ["Engine", "make_engine", "record_seed", "resolve_sampling"]
