"""Which engine: every stage that makes a model write or score text calls `make_engine(model_dir, params,
runtime)`: in-process transformers (default), vLLM, or an OpenAI-compatible server. A stage with an engine of
its own (augment, curate, respond, evaluate) passes `stage_settings(params, stage)`. What the engines share (the
protocol, sampling, per-record seeds) is in `humpback/engines/base.py`, below them all.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from humpback.engines.base import Engine
from humpback.params import DEFAULT, ENGINE_STAGES, GenerationParams, Params, RuntimeParams


def resolve_engine(name: str) -> str:
    """`generation.engine` as a concrete engine: `auto` is vLLM where a CUDA device and vLLM are present, else
    the in-process transformers engine."""
    if name != "auto":
        return name
    import importlib.util

    import torch

    return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "transformers"


def resolved(params: GenerationParams) -> dict[str, str]:
    """What `auto` became on this machine, for a stage's metrics and a model card: results depend on it."""
    from humpback.engines.models import resolve_dtype

    return {"engine": resolve_engine(params.engine), "dtype": resolve_dtype(params.dtype)}


def make_engine(model_dir: str | Path, params: GenerationParams, runtime: RuntimeParams) -> Engine:
    """The engine named by `params.engine` (`auto`: see `resolve_engine`), run as `runtime` says (batch budget,
    server, concurrency; `cluster: servers`: the stage's servers, humpback/engines/servers.py; `cluster: ray`:
    Ray actors each holding this function's engine, humpback/engines/ray_cluster.py); heavy
    dependencies are imported only for the one chosen."""
    params = dataclasses.replace(params, engine=resolve_engine(params.engine))
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

        return RayPool(model_dir, params, runtime, make_engine)
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


def stage_settings(params: Params, stage: str, reads_only: bool = False) -> tuple[GenerationParams, RuntimeParams]:
    """`stage`'s engine settings for `make_engine`: `<stage>.engine` and `<stage>.api_model`, or generation.engine
    and generation.api_model where they say `default`; its server `runtime.<stage>_base_url`, or
    runtime.base_url where that is "". Reads the shared keys only where the stage defers to them.

    `generation.dtype: auto` is resolved here for the stage's kind of work: a stage that only reads
    likelihoods (`reads_only`: whole prompts through the model, compute-bound) gets bf16 only where bf16 is fast
    for compute (GPU, AMX, a CPU whose bf16 matmuls measure fast: `modeling.fast_bfloat16`); one that writes text
    (decoding, memory-bound) wherever oneDNN has bf16 kernels."""
    if stage not in ENGINE_STAGES:
        raise ValueError(f"no engine settings for stage '{stage}' (stages with their own: {ENGINE_STAGES})")
    own = getattr(params, stage)
    engine = params.generation.engine if own.engine == DEFAULT else own.engine
    api_model = params.generation.api_model if own.api_model == DEFAULT else own.api_model
    from humpback.engines.models import resolve_dtype

    dtype = resolve_dtype(params.generation.dtype, compute_bound=reads_only)
    generation = dataclasses.replace(params.generation, engine=engine, api_model=api_model, dtype=dtype)
    base_url = getattr(params.runtime, f"{stage}_base_url") or params.runtime.base_url
    return generation, dataclasses.replace(params.runtime, base_url=base_url)


__all__ = ["make_engine", "resolve_engine", "resolved", "stage_settings"]
