"""What every engine shares, below them all: the protocol, the settings an engine is built from, a call's sampling
overrides (`Sampling`) with the preamble that resolves them, and the per-record seed.

Engines (`humpback/engines/*`) and their users import these from here; `humpback.engines.factory.make_engine` picks an
engine. Prompts are already formatted (`prompts.format_example(...).prompt`) and tokenized exactly as training
tokenizes a prefix; generation stops at the template's end-of-turn token; each prompt carries its own seed, so a
record's output does not depend on which other records share its batch, shard or server; results come back in
input order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from humpback.params import GenerationParams, RuntimeParams


@dataclass(frozen=True)
class Sampling:
    """A call's sampling in place of the params' (None = the params' value, temperature 0 = greedy)."""

    temperature: float | None = None
    top_p: float | None = None


UNSET = Sampling()  # no override: the params' temperature and top_p
GREEDY = Sampling(temperature=0.0)


class Engine(Protocol):
    tokenizer: object  # a transformers PreTrainedTokenizerBase: formats prompts with the model's template

    def generate(
        self, prompts: list[str], max_new_tokens: int, seeds: list[int], *, sampling: Sampling = UNSET, desc: str = ""
    ) -> list[str]:
        """One completion per prompt, sampled with the params' temperature and top_p unless `sampling` overrides
        them."""
        ...

    def next_token_logprobs(self, prompts: list[str], candidates: list[str], *, desc: str = "") -> list[list[float]]:
        """log P(first token of each candidate | prompt): one row per prompt, candidates in order."""
        ...

    def completion_logprobs(self, prompts: list[str], completions: list[str], *, desc: str = "") -> list[list[float]]:
        """log P(token | prompt, earlier completion tokens) for every token of each completion, with prompt and
        completion tokenized separately as training tokenizes them (the openai engine needs a server that
        returns prompt log-probabilities for token-id prompts, as vLLM does)."""
        ...


@dataclass(frozen=True)
class EngineSettings:
    """One engine as this machine runs it, resolved once (`humpback.engines.factory.engine_settings`, or
    `stage_settings` for a stage): `generation.engine` and `generation.dtype` are concrete, never `auto`, and
    `runtime.base_url` is the stage's own server. A stage builds its engine from this value and records
    `resolved()` from the same value, so what ran and what its metrics say cannot part."""

    generation: GenerationParams
    runtime: RuntimeParams

    def resolved(self) -> dict[str, str]:
        """What `auto` became on this machine, for a stage's metrics and a judge's description: results depend
        on it."""
        return {"engine": self.generation.engine, "dtype": self.generation.dtype}


def resolve_sampling(
    params: GenerationParams, prompts: list[str], seeds: list[int], sampling: Sampling
) -> tuple[float, float]:
    """Every engine's `generate` preamble: one seed per prompt, and (temperature, top_p): the params' unless
    `sampling` overrides them."""
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    temperature, top_p = sampling.temperature, sampling.top_p
    return (params.temperature if temperature is None else temperature, params.top_p if top_p is None else top_p)


def record_seed(seed: int, *parts: object) -> int:
    """A 31-bit sampling seed from the global seed and a record's identity (stable across runs and machines).

    31 bits because every backend accepts it (torch, vLLM, OpenAI-compatible servers)."""
    key = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF
