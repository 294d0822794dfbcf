"""What every engine shares, below them all: the protocol, the sampling preamble and the per-record seed.

Engines (`humpback/engines/*`) and their users import these from here; `humpback.engines.factory.make_engine` picks an
engine. Prompts are already formatted (`prompts.format_example(...).prompt`) and tokenized exactly as training
tokenizes a prefix; generation stops at the template's end-of-turn token; each prompt carries its own seed, so a
record's output does not depend on which other records share its batch, shard or server; results come back in
input order.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from humpback.params import GenerationParams


class Engine(Protocol):
    tokenizer: object  # a transformers PreTrainedTokenizerBase: formats prompts with the model's template

    def generate(
        self,
        prompts: list[str],
        max_new_tokens: int,
        seeds: list[int],
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        desc: str = "",
    ) -> list[str]:
        """One completion per prompt (temperature 0 = greedy; None = the params' value)."""
        ...

    def next_token_logprobs(self, prompts: list[str], candidates: list[str], *, desc: str = "") -> list[list[float]]:
        """log P(first token of each candidate | prompt): one row per prompt, candidates in order."""
        ...

    def completion_logprobs(self, prompts: list[str], completions: list[str], *, desc: str = "") -> list[list[float]]:
        """log P(token | prompt, earlier completion tokens) for every token of each completion, with prompt and
        completion tokenized separately as training tokenizes them (the openai engine needs a server that
        returns prompt log-probabilities for token-id prompts, as vLLM does)."""
        ...


def resolve_sampling(
    params: GenerationParams, prompts: list[str], seeds: list[int], temperature: float | None, top_p: float | None
) -> tuple[float, float]:
    """Every engine's `generate` preamble: one seed per prompt, and the params' sampling unless overridden."""
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    return (params.temperature if temperature is None else temperature, params.top_p if top_p is None else top_p)


def record_seed(seed: int, *parts: object) -> int:
    """A 31-bit sampling seed from the global seed and a record's identity (stable across runs and machines).

    31 bits because every backend accepts it (torch, vLLM, OpenAI-compatible servers)."""
    key = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF
