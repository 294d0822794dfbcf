"""Judges for `evaluate`: a local model, or an OpenAI(-compatible) API through alpaca_eval's annotator.

The judge runs on `evaluate.engine` (`default` = generation.engine), with its model name `evaluate.api_model`
and its server `runtime.evaluate_base_url` (or runtime.base_url): one `EngineSettings`, resolved once by
`humpback.engines.factory.stage_settings(params, "evaluate")`, which names the judge and builds its engine.

The API judges and the local pairwise judge use the alpaca_eval annotator config named by `evaluate.annotator`:
by default AlpacaEval 2's `weighted_alpaca_eval_gpt4_turbo`, whose prompt
(alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt asks for one token, "m" = output_1 or "M" = output_2) and
`logprob_parser` turn P(m) / (P(m) + P(M)) into a preference in [1, 2]; the paper's AlpacaEval 1 annotator
`alpaca_eval_gpt4` asks for a ranking in text instead (`ranking_parser`), which only an API judge can run: a
local engine reads next-token log-probabilities, so it is refused an annotator without a logprob parser. Only
where the completions come from changes:

- an in-process engine (transformers, vllm) with `evaluate.judge_read: pairwise`: `LocalJudge`, an alpaca_eval
  `fn_completions` callable. It renders alpaca_eval's ChatML prompt with the judge model's own chat template
  and reads log P("m"), log P("M") from one forward pass (`Engine.next_token_logprobs`), returned in the shape
  of the OpenAI decoder's `completions_all`.
- the openai engine with `judge_read: pairwise` and no server URL ("openai"): alpaca_eval's own OpenAI decoder
  with `evaluate.api_model`, "" = the config's GPT-4 model (key from OPENAI_API_KEY).
- the openai engine with `judge_read: pairwise` and a server URL ("openai-compatible"): the same decoder,
  pointed at the server by an alpaca_eval client-config YAML.

Any engine with `judge_read` set to a curation method (`pmi`, `rubric_calibrated`, ...; `length` for the baseline)
is `ScoreJudge`: each answer is scored alone by that method (curation/scoring.py, the code curate uses) and the higher
score wins. Its prompt is the judge's own (`evaluate.judge_scoring`: system prompt, cut, reply length, retries),
never curate.* or train.tagging: the judge is an instrument and must not move with the conditions it compares.
It never sees two answers at once, so it cannot prefer a position: a small model asked to compare two answers
picks the same slot whatever they say (measured: docs/judges.md "Which local judge"), while the same model
rating one answer at a time separates good answers from bad ones. It is called like a
`PairwiseAnnotator` and caches its scores per (instruction, answer) in the same cache tree.

Output order is never randomised here (`is_randomize_output_order: false`): head_to_head.py judges every pair in
both orders explicitly, which measures position bias instead of hiding it in noise.

Annotations are cached by alpaca_eval itself (`caching_path`), one file per judge identity (the annotator's
name included) under
`.humpback/cache/judge/<judge id>/` of the repository's main workspace (`storage.workdirs.judge_cache`: queued
experiments share it), keyed by (instruction, output_1, output_2): a rerun re-judges nothing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from humpback.engines.base import EngineSettings
from humpback.params import EvaluateParams, JudgeScoringParams
from humpback.storage.hashing import hash_file, hash_json, hash_text
from humpback.storage.records import read_json
from humpback.storage.workdirs import cache_lock, judge_cache, merge_json

ALPACA_EVAL_CONFIG = "weighted_alpaca_eval_gpt4_turbo"
# Bump when the way a prompt reaches the local judge changes: it is part of the cache key (the judge id).
LOCAL_FORMAT_VERSION = "1"
SCORE_FORMAT_VERSION = "1"


class JudgeError(ValueError):
    """A judge that cannot be set up (missing key, missing URL, unknown model); the message says what to set."""


# ------------------------------------------------------------------------------------------ annotator config


def annotator_config(name: str = ALPACA_EVAL_CONFIG) -> dict[str, Any]:
    """alpaca_eval's own config for annotator `name` (a folder of its evaluators_configs), unchanged: the
    leaderboard protocol (evaluation.protocol_switches) reads its output-order randomisation from here."""
    from alpaca_eval import constants

    folder = Path(constants.EVALUATORS_CONFIG_DIR)
    file = folder / name / "configs.yaml"
    if not name or "/" in name or not file.is_file():
        known = sorted(p.parent.name for p in folder.glob("*/configs.yaml"))
        raise JudgeError(
            f"evaluate.annotator: '{name}' is not an alpaca_eval annotator config (known: {', '.join(known)})"
        )
    configs = yaml.safe_load(file.read_text())
    return dict(configs[name] if name in configs else next(iter(configs.values())))


def alpaca_eval_config(name: str = ALPACA_EVAL_CONFIG, **overrides: Any) -> dict[str, Any]:
    """alpaca_eval's annotator config `name`, with fixed output order and an absolute template path."""
    from alpaca_eval import constants

    config = annotator_config(name)
    config["prompt_template"] = str(Path(constants.EVALUATORS_CONFIG_DIR) / config["prompt_template"])
    config["is_randomize_output_order"] = False
    config.update(overrides)
    return config


def build_annotator(
    config: dict[str, Any], name: str, folder: Path, fn_completions: Callable | None = None, seed: int = 0
):
    """A `PairwiseAnnotator` for one judge config, caching its annotations in `folder`.

    A Python callable cannot live in alpaca_eval's YAML config, so a local judge's `fn_completions` is handed
    to the annotator as a keyword argument (alpaca_eval passes unknown keywords on to every single annotator).
    """
    from alpaca_eval.annotators import PairwiseAnnotator

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    extra = {}
    if fn_completions is not None:
        config.pop("fn_completions", None)
        config.pop("completions_kwargs", None)
        extra["fn_completions"] = fn_completions
    # alpaca_eval reads its whole cache file when built and rewrites it whole after each chunk (`save`, which
    # merges what is on disk first): both under the file's lock, so two queued runs sharing a judge keep both.
    lock = cache_lock(folder / "annotations.json")
    with lock:
        (folder / "configs.yaml").write_text(yaml.safe_dump({name: config}, sort_keys=False))
        annotator = PairwiseAnnotator(
            annotators_config=str(folder / "configs.yaml"),
            caching_path=str(folder / "annotations.json"),
            seed=seed,
            **extra,
        )
    save = annotator.save

    def locked_save(*args, **kwargs):
        with lock:
            return save(*args, **kwargs)

    annotator.save = locked_save
    return annotator


def make_judge(
    params: EvaluateParams,
    judge_engine: EngineSettings,
    judge_base: str | Path,
    cache_root: Path | None = None,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """The annotator for the judge's engine and read, and a description of the judge for the metrics file.
    `judge_engine` is the judge's own, resolved (`stage_settings(params, "evaluate")`): its engine, api_model
    and base_url are evaluate.engine, evaluate.api_model and the judge's server.

    The judge id (a hash of what decides the judgements: model weights or name, server, prompt template or
    scoring method and its settings) names the cache folder, so a different judge never reads another judge's
    annotations. Nothing here reads a condition under test (curate.*, train.*): the judge is the same whatever
    the models were trained and curated with."""
    cache_root = judge_cache() if cache_root is None else cache_root
    if params.judge_read != "pairwise":  # no annotator: each answer scored alone
        return _score_judge(params, judge_engine, judge_base, cache_root, seed)
    config = alpaca_eval_config(params.annotator)
    # the annotator's name and its template's content both decide the judgements
    annotator_id = params.annotator + "|" + hash_file(config["prompt_template"])[:8]
    if judge_engine.generation.engine != "openai":
        return _local_judge(params, judge_engine, judge_base, cache_root, seed, annotator_id)
    if config.get("fn_completions") != "openai_completions":
        raise JudgeError(
            f"evaluate.annotator: {params.annotator} completes through "
            f"{config.get('fn_completions')!r}; the openai engine runs annotators that complete "
            "through 'openai_completions'"
        )
    base_url, api_model = judge_engine.runtime.base_url, judge_engine.generation.api_model
    if not base_url:
        annotator, judge = _openai_judge(config, api_model, cache_root, seed, annotator_id)
    else:
        annotator, judge = _openai_compatible_judge(config, api_model, base_url, cache_root, seed, annotator_id)
    return annotator, {**judge, "annotator": params.annotator}


def _judge_weights(params: EvaluateParams, judge_base: str | Path) -> tuple[Path, str]:
    """The local judge's model folder (or hub id) and the identity of its weights."""
    from humpback.engines.models import model_identity  # torch: only a local judge needs it, not an API judge

    judge_ref = str(judge_base) if params.judge_model == "base" else params.judge_model
    judge_dir = Path(judge_ref)
    if judge_dir.exists():
        return judge_dir, hash_json(model_identity(judge_dir))
    if _is_hub_id(judge_ref):
        return judge_dir, judge_ref  # a hub id names fixed weights (up to the hub's revision)
    raise JudgeError(f"evaluate.judge_model: judge model folder '{judge_dir}' not found")


def _local_judge(
    params: EvaluateParams,
    judge_engine: EngineSettings,
    judge_base: str | Path,
    cache_root: Path,
    seed: int,
    annotator_id: str,
) -> tuple[Any, dict[str, Any]]:
    config = alpaca_eval_config(params.annotator)
    engine, dtype = judge_engine.generation.engine, judge_engine.generation.dtype
    tokens = (config.get("completion_parser_kwargs") or {}).get("denominator_tokens")
    if config.get("fn_completion_parser") != "logprob_parser" or not tokens:
        raise JudgeError(
            f"evaluate.annotator: {params.annotator} parses generated text ({config.get('fn_completion_parser')}), "
            f"which a local judge (evaluate.engine {engine}) cannot run: it reads next-token log-probabilities. "
            f"Use an annotator with a logprob_parser ({ALPACA_EVAL_CONFIG}), or evaluate.engine openai"
        )
    judge_dir, weights = _judge_weights(params, judge_base)
    candidates = list(dict.fromkeys(tokens))
    identity = f"local|{weights}|{engine}|{dtype}|{LOCAL_FORMAT_VERSION}|{annotator_id}"
    judge_id = "local-" + hash_text(identity)[:16]
    fn = LocalJudge(judge_dir, judge_engine, candidates)
    annotator = build_annotator(config, "humpback_local", cache_root / judge_id, fn_completions=fn, seed=seed)
    return annotator, {
        "kind": "local",
        "read": "pairwise",
        "annotator": params.annotator,
        "model": str(judge_dir),
        "id": judge_id,
        "resolved": judge_engine.resolved(),
    }


def _score_judge(
    params: EvaluateParams,
    judge_engine: EngineSettings,
    judge_base: str | Path,
    cache_root: Path,
    seed: int,
) -> tuple[Any, dict[str, Any]]:
    method, scoring = params.judge_read, params.judge_scoring
    settings = dataclasses.asdict(scoring)  # every setting decides the judgements (generate's two included)
    judge_dir, weights = (Path(str(judge_base)), "none") if method == "length" else _judge_weights(params, judge_base)
    engine, dtype = judge_engine.generation.engine, judge_engine.generation.dtype
    identity = f"score|{method}|{weights}|{engine}|{dtype}|{hash_json(settings)}|{seed}|{SCORE_FORMAT_VERSION}"
    if engine == "openai":  # the served model scores, whatever the local folder (its tokenizer) holds
        identity += f"|{judge_engine.generation.api_model}"
    judge_id = f"score-{method}-" + hash_text(identity)[:16]
    judge = ScoreJudge(judge_dir, judge_engine, scoring, method, cache_root / judge_id / "scores.json", seed)
    return judge, {
        "kind": "local",
        "read": method,
        "model": str(judge_dir),
        "id": judge_id,
        "scoring": settings,
        "resolved": judge_engine.resolved(),
    }


def _openai_judge(config: dict[str, Any], api_model: str, cache_root: Path, seed: int, annotator_id: str):
    """OpenAI's own API (no server URL set): `api_model`, or "" = the annotator config's GPT-4 model."""
    if not os.environ.get("OPENAI_API_KEY"):
        raise JudgeError(
            "evaluate.engine=openai with no server URL (runtime.evaluate_base_url and runtime.base_url "
            "empty) judges through OpenAI's API and needs the OPENAI_API_KEY environment variable"
        )
    if api_model:
        config["completions_kwargs"] = {**config["completions_kwargs"], "model_name": api_model}
    model = config["completions_kwargs"]["model_name"]
    judge_id = "openai-" + hash_text(f"{model}|{annotator_id}")[:16]
    annotator = build_annotator(config, "humpback_openai", cache_root / judge_id, seed=seed)
    return annotator, {"kind": "openai", "model": model, "id": judge_id}


def _openai_compatible_judge(
    config: dict[str, Any], api_model: str, base_url: str, cache_root: Path, seed: int, annotator_id: str
):
    """Any server speaking the OpenAI chat API with logprobs (vLLM, `transformers serve`, ...)."""
    if not api_model:
        raise JudgeError(
            f"evaluate.engine=openai at {base_url} needs evaluate.api_model = the served model's name "
            "(or generation.api_model while evaluate.api_model is default)"
        )
    # the server's URL is not part of the judge's identity: the same served model behind another address
    # judges the same way (and moving a server must not throw the cache away)
    judge_id = "oaic-" + hash_text(f"{api_model}|{annotator_id}")[:16]
    folder = cache_root / judge_id
    folder.mkdir(parents=True, exist_ok=True)
    client_config = folder / "client_config.yaml"
    # alpaca_eval's client-config file (the OPENAI_CLIENT_CONFIG_PATH format): kwargs of openai.OpenAI. The key
    # stays in the environment (OPENAI_API_KEY); servers that need none get a placeholder.
    client = {"base_url": base_url}
    if not os.environ.get("OPENAI_API_KEY"):
        client["api_key"] = "EMPTY"
    client_config.write_text(yaml.safe_dump({"default": [client]}))
    config["completions_kwargs"] = {
        **config["completions_kwargs"],
        "model_name": api_model,
        "client_config_path": str(client_config.resolve()),
        # alpaca_eval guesses chat vs. completion API from the name ("...-Instruct" reads as completion-only)
        "requires_chatml": True,
        "price_per_token": 0.0,
    }
    annotator = build_annotator(config, "humpback_openai_compatible", folder, seed=seed)
    return annotator, {"kind": "openai-compatible", "model": api_model, "base_url": base_url, "id": judge_id}


# ------------------------------------------------------------------------------------------- the local judge


class _LazyEngine:
    """A judge's engine, loaded on first use: a rerun answered entirely from the cache loads no model."""

    model_dir: Path
    settings: EngineSettings
    _engine: Any

    @property
    def engine(self):
        if self._engine is None:
            from humpback.engines.factory import make_engine

            self._engine = make_engine(self.model_dir, self.settings)
        return self._engine


class LocalJudge(_LazyEngine):
    """alpaca_eval `fn_completions` callable: one forward pass of a local model per prompt.

    The engine is loaded on the first call, so a rerun answered entirely from the cache loads no model.
    """

    def __init__(
        self,
        model_dir: str | Path,
        settings: EngineSettings,
        candidates: Sequence[str],
        engine: Any = None,
    ):
        self.model_dir, self.settings = Path(model_dir), settings
        self.candidates = list(candidates)
        self._engine = engine

    def __call__(self, prompts: Sequence[str], **_: Any) -> dict[str, list]:
        start = time.perf_counter()
        engine = self.engine
        rendered = [judge_prompt(engine.tokenizer, p) for p in prompts]
        rows = engine.next_token_logprobs(rendered, self.candidates, desc="judge") if rendered else []
        completions = [logprob_completion(dict(zip(self.candidates, row))) for row in rows]
        seconds = (time.perf_counter() - start) / max(1, len(prompts))
        return {
            "completions": [c["text"] for c in completions],
            "completions_all": completions,
            "price_per_example": [0.0] * len(completions),
            "time_per_example": [seconds] * len(completions),
        }


class ScoreJudge(_LazyEngine):
    """A position-free local judge (module docstring): called like alpaca_eval's `PairwiseAnnotator` on rows
    with instruction, output_1 and output_2, it scores every distinct answer alone with `method` and returns
    the rows with `preference` 1 (output_1 scored higher), 2 (output_2) or 1.5 (a tie), None where an answer
    has no score (an unparsed `generate` read), plus both scores. Scores are cached in `cache_file`, keyed by
    a hash of (instruction, answer), and written after each call, so a rerun scores nothing twice.

    `scoring` is the judge's own (`evaluate.judge_scoring`): what `score_pairs` reads of a curate section
    (max_pair_chars; generate's max_new_tokens and max_retries) and the system prompt (S_a, or none)."""

    def __init__(
        self,
        model_dir: str | Path,
        settings: EngineSettings,
        scoring: JudgeScoringParams,
        method: str,
        cache_file: str | Path,
        seed: int = 0,
        engine: Any = None,
    ):
        self.model_dir, self.settings, self.scoring = Path(model_dir), settings, scoring
        self.method, self.tagging, self.seed = method, scoring.system_prompt == "S_a", seed
        self.cache_file = Path(cache_file)
        self.cache: dict[str, float | None] = read_json(self.cache_file) if self.cache_file.is_file() else {}
        self._engine = engine

    def __call__(self, rows: Sequence[dict]) -> list[dict]:
        from humpback.curation.scoring import BASELINE, score_pairs

        answers: dict[str, dict] = {}
        for row in rows:
            for side in ("output_1", "output_2"):
                key = answer_key(row["instruction"], row[side])
                if key not in self.cache:
                    answers[key] = {"id": key, "instruction": row["instruction"], "output": str(row[side])}
        if answers:
            engine = None if self.method == BASELINE else self.engine
            scores = score_pairs(
                engine, list(answers.values()), self.scoring, self.tagging, self.seed, method=self.method, desc="judge"
            )
            # merged with what another run (a second queue worker) added meanwhile
            self.cache = merge_json(
                self.cache_file, {k: (s.score if s.parsed else None) for k, s in zip(answers, scores)}
            )
        judged = []
        for row in rows:
            first = self.cache[answer_key(row["instruction"], row["output_1"])]
            second = self.cache[answer_key(row["instruction"], row["output_2"])]
            judged.append({**row, "preference": score_preference(first, second), "score_1": first, "score_2": second})
        return judged


def answer_key(instruction: str, output: Any) -> str:
    return hash_json([instruction, str(output)])


def score_preference(first: float | None, second: float | None) -> float | None:
    """alpaca_eval's preference from two pointwise scores: 1 = the first is better, 2 = the second, 1.5 = tie."""
    if first is None or second is None:
        return None
    return 1.5 if first == second else (1.0 if first > second else 2.0)


def judge_prompt(tokenizer, alpaca_prompt: str) -> str:
    """alpaca_eval's ChatML-marked prompt (<|im_start|>system ... <|im_end|>) rendered with the judge model's
    own chat template, ending with the assistant header so the next token is the judge's answer.

    The markers are parsed with alpaca_eval's `prompt_to_chatml` (what its OpenAI decoder does) rather than
    passed through as text: a model whose template differs from ChatML would otherwise see foreign markers.
    """
    from alpaca_eval.utils import prompt_to_chatml

    from humpback.prompts import format_example

    text = alpaca_prompt.strip()
    if not text.startswith("<|im_start|>"):
        return format_example(tokenizer, user=text).prompt
    messages = prompt_to_chatml(text)
    system = [m["content"] for m in messages if m["role"] == "system"]
    users = [m["content"] for m in messages if m["role"] == "user"]
    if len(users) != 1 or len(system) > 1 or len(messages) != len(users) + len(system):
        raise JudgeError(
            "local judge: expected an optional system turn and one user turn, got roles "
            f"{[m['role'] for m in messages]}"
        )
    return format_example(tokenizer, user=users[0], system=system[0] if system else None).prompt


def logprob_completion(logprobs: dict[str, float]) -> dict[str, Any]:
    """One completion shaped like alpaca_eval's OpenAI decoder output with `logprobs` and `top_logprobs`,
    which is what `completion_parsers.logprob_parser` reads. Non-finite values are left out, so a judge that
    gives nothing usable yields an unparsed annotation (NaN), never a crash."""
    top = sorted(
        ({"token": t, "logprob": float(lp)} for t, lp in logprobs.items() if lp is not None and math.isfinite(lp)),
        key=lambda x: -x["logprob"],
    )
    best = top[0] if top else {"token": "", "logprob": float("-inf")}
    content = [{"token": best["token"], "logprob": best["logprob"] if top else None, "top_logprobs": top}]
    return {"text": best["token"], "logprobs": {"content": content}, "total_tokens": 0}


# ------------------------------------------------------------------------------------------------- identity


def _is_hub_id(ref: str) -> bool:
    return ref.count("/") == 1 and not ref.startswith((".", "/", "~"))
