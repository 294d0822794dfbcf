"""Which engine: every stage that makes a model write or score text calls `make_engine(model_dir, settings)`:
in-process transformers (default), vLLM, or an OpenAI-compatible server. `settings` is an `EngineSettings`, the
stage's engine resolved once on this machine: `stage_settings(params, stage)` for a stage with an engine of its
own (augment, curate, respond, evaluate), `engine_settings(generation, runtime)` for any other caller; the
stage records `settings.resolved()` from the same value. What the engines share (the protocol, the settings,
sampling, per-record seeds) is in `humpback/engines/base.py`, below them all.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from humpback.engines.base import Engine, EngineSettings
from humpback.params import DEFAULT, ENGINE_STAGES, GenerationParams, Params, RuntimeParams


def resolve_engine(name: str) -> str:
    """`generation.engine` as a concrete engine: `auto` is vLLM where a CUDA device and vLLM are present, else
    the in-process transformers engine."""
    if name != "auto":
        return name
    import importlib.util

    import torch

    return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "transformers"


def engine_settings(generation: GenerationParams, runtime: RuntimeParams, reads_only: bool = False) -> EngineSettings:
    """`generation` and `runtime` as one `EngineSettings`, `auto` resolved here and nowhere after: the engine by
    `resolve_engine`, the dtype by `resolve_dtype` for the kind of work (`reads_only`: see `stage_settings`)."""
    from humpback.engines.models import resolve_dtype

    concrete = dataclasses.replace(
        generation,
        engine=resolve_engine(generation.engine),
        dtype=resolve_dtype(generation.dtype, compute_bound=reads_only),
    )
    return EngineSettings(concrete, runtime)


def make_engine(model_dir: str | Path, settings: EngineSettings) -> Engine:
    """The engine `settings.generation.engine` names, run as `settings.runtime` says (batch budget, server,
    concurrency; `cluster: servers`: the stage's servers, humpback/engines/servers.py; `cluster: ray`: Ray actors
    each holding this function's engine, humpback/engines/ray_cluster.py); heavy dependencies are imported only
    for the one chosen. Nothing is resolved here: `settings` comes resolved (`engine_settings`)."""
    params, runtime = settings.generation, settings.runtime
    if runtime.cluster == "servers":  # this stage instance's servers, when runtime.servers lists it
        from humpback.engines.servers import ServerPool, stage_servers

        urls = stage_servers(runtime)
        if urls and params.engine != "openai":
            raise ValueError(
                f"runtime.servers lists servers for this stage, but its engine is {params.engine}: "
                "servers run the openai engine (set the stage's engine, e.g. curate.engine, to openai)"
            )
        if urls:
            return ServerPool(model_dir, params, runtime, urls)
    if runtime.cluster == "ray":  # the stage's shards on Ray actors, each holding this factory's engine
        if params.engine == "openai":
            raise ValueError(
                "runtime.cluster ray runs the stage's engine on Ray actors (transformers or vllm); "
                "for OpenAI-compatible servers use runtime.cluster servers"
            )
        from humpback.engines.ray_cluster import RayPool

        return RayPool(model_dir, settings, make_engine)
    if params.engine == "transformers":
        from humpback.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model_dir, params, runtime)
    if params.engine == "vllm":
        from humpback.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model_dir, params, runtime)
    if params.engine == "openai":
        from humpback.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(model_dir, params, runtime)
    raise ValueError(
        f"generation.engine: unknown engine '{params.engine}' (EngineSettings come resolved from engine_settings)"
    )


def stage_settings(params: Params, stage: str, reads_only: bool = False) -> EngineSettings:
    """`stage`'s engine, resolved once (`engine_settings`), for `make_engine` and for the stage's metrics:
    `<stage>.engine` and `<stage>.api_model`, or generation.engine and generation.api_model where they say
    `default`; its server `runtime.<stage>_base_url`, or runtime.base_url where that is "". Reads the shared keys
    only where the stage defers to them.

    `generation.dtype: auto` is resolved for the stage's kind of work: a stage that only reads likelihoods
    (`reads_only`: whole prompts through the model, compute-bound) gets bf16 only where bf16 is fast for compute
    (GPU, AMX, a CPU whose bf16 matmuls measure fast: `models.fast_bfloat16`); one that writes text (decoding,
    memory-bound) wherever oneDNN has bf16 kernels."""
    if stage not in ENGINE_STAGES:
        raise ValueError(f"no engine settings for stage '{stage}' (stages with their own: {ENGINE_STAGES})")
    own = getattr(params, stage)
    engine = params.generation.engine if own.engine == DEFAULT else own.engine
    api_model = params.generation.api_model if own.api_model == DEFAULT else own.api_model
    generation = dataclasses.replace(params.generation, engine=engine, api_model=api_model)
    base_url = getattr(params.runtime, f"{stage}_base_url") or params.runtime.base_url
    return engine_settings(generation, dataclasses.replace(params.runtime, base_url=base_url), reads_only)


__all__ = ["engine_settings", "make_engine", "resolve_engine", "stage_settings"]
