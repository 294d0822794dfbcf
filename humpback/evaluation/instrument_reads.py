"""The likelihood stage's work for one model: read every held-out set with the run's engine at the instruments'
own precision (`likelihood.dtype`), as `humpback.evaluation.likelihood.answer_likelihoods` defines a read, and
record the settings that made the values. Apart from likelihood.py so that what only compares values (the
report) does not depend on the engines."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from humpback.engines.base import EngineSettings
from humpback.engines.factory import engine_settings, make_engine
from humpback.evaluation.likelihood import answer_likelihoods
from humpback.params import GenerationParams, Params

log = logging.getLogger("likelihood")


def instrument_settings(params: Params) -> EngineSettings:
    """The run's engine at the instruments' own precision (likelihood.dtype), resolved once; sampling plays no
    part."""
    generation = GenerationParams(
        engine=params.generation.engine,
        dtype=params.likelihood.dtype,
        temperature=1.0,
        top_p=1.0,
        api_model=params.generation.api_model,
    )
    return engine_settings(generation, params.runtime)


def read_instruments(model_dir: str, name: str, sets: Mapping[str, Sequence[dict]], params: Params) -> dict[str, Any]:
    """The likelihood stage's record for one model: `answer_likelihoods` of every held-out set (by instrument
    name), read with the run's engine at `likelihood.dtype`, each question prompted with `respond.system_prompt`,
    with the settings that made it and the seconds each set took."""
    start = time.perf_counter()
    settings = instrument_settings(params)
    engine = make_engine(model_dir, settings)
    instruments, seconds = {}, {}
    for instrument, pairs in sets.items():
        t = time.perf_counter()
        result = answer_likelihoods(
            engine, pairs, params.respond.system_prompt, params.likelihood.max_chars, desc=f"{name} {instrument}"
        )
        instruments[instrument], seconds[instrument] = result, round(time.perf_counter() - t, 2)
        log.info(
            "%s %s: n %d, mean %.4f nats/token (%d tokens, %.1fs)",
            name,
            instrument,
            result["n"],
            result["mean"],
            result["tokens"],
            seconds[instrument],
        )
    return {
        "model": name,
        "system_prompt": params.respond.system_prompt,
        "max_chars": params.likelihood.max_chars,
        "dtype": params.likelihood.dtype,
        "engine": settings.generation.engine,
        "seconds": {**seconds, "total": round(time.perf_counter() - start, 2)},
        "instruments": instruments,
    }
