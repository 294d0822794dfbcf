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

from humpback.curation import methods

DEFAULT_PARAMS_FILE = "params.yaml"


class ParamsError(ValueError):
    """A params file that does not match the schema below."""


# --------------------------------------------------------------------------------------------- schema


class _Section:
    """Base of every params section: while `track_reads` is on, records each leaf key the running code reads,
    so a test can compare what a stage really reads with what dvc.yaml says it depends on."""

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if _reads is not None and name in type(self).__dataclass_fields__ and not isinstance(value, _Section):
            # Only sections the loader built are params: a copy made with other values (dataclasses.replace,
            # a section built by hand) records nothing; reading the original to make it did.
            prefix = object.__getattribute__(self, "__dict__").get("_key_prefix")
            if prefix is not None:
                _reads.add(prefix + name)
        return value


# The dotted keys read since `track_reads()` (None = not tracking).
_reads: set[str] | None = None


# The models the DAG trains, in training order: one train stage and one `seeds.training_<role>` key each.
ROLES = ("backward", "m0", "m1", "m2")


@dataclass(frozen=True)
class SeedParams(_Section):
    """Three independent seeds, so one source of randomness can vary while the others stay put. The held-out,
    dev and eval splits use none of them: they never move."""

    sampling: int  # which seed pairs / web segments a limit keeps
    training: int  # data order, adapter initialisation, dropout
    generation: int  # sampled instructions, answers and generate-read scores
    # One role's training seed alone (training/role.py: training_seed): default = `training`. A number reseeds that
    # role only, so seed replicates of M2 under one selection (-S seeds.training_m2=0,1,2) retrain M2 alone.
    training_backward: int | Literal["default"]
    training_m0: int | Literal["default"]
    training_m1: int | Literal["default"]
    training_m2: int | Literal["default"]


@dataclass(frozen=True)
class BaseParams(_Section):
    model: str  # gguf:<package>/<file> | local folder | hub id
    dtype: Literal["float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class SeedDataParams(_Section):
    source: Literal["python-faq", "jsonl", "oasst1"]
    path: str  # docs root for python-faq ("" = Debian's default), the file for jsonl; oasst1: "" = the hub
    instruction_field: str
    output_field: str
    language: str  # oasst1: keep conversation trees whose first turn is in this language ("" = any)
    limit: int  # 0 = all
    heldout: int  # pairs held out of training for the curation dev set
    on_bad_record: Literal["error", "skip"]


@dataclass(frozen=True)
class WebDataParams(_Section):
    source: Literal["python-docs", "jsonl", "html", "warc", "parquet"]
    path: str
    text_field: str
    min_chars: int
    max_chars: int
    max_repetition: float  # drop a segment when this share of its text repeats an earlier word 5-gram (1 = off)
    language: str  # keep segments detected as this ISO 639-1 language ("" = any)
    near_duplicate: float  # MinHash Jaccard similarity at which a segment is a near-duplicate (0 = off)
    limit: int  # deterministic sample size, 0 = all
    on_bad_record: Literal["error", "skip"]  # skip: a crawl always has some damaged records (counted)
    max_bad_fraction: float  # stop when more than this share of documents read were malformed or undecodable


@dataclass(frozen=True)
class EvalDataParams(_Section):
    source: Literal["mt-bench", "jsonl", "alpaca-eval", "project-faqs"]
    path: str
    instruction_field: str
    reference: Literal["none", "text_davinci_003", "gpt4_turbo"]  # alpaca-eval: reference outputs to carry
    limit: int
    on_bad_record: Literal["error", "skip"]


@dataclass(frozen=True)
class OtherDataParams(_Section):
    """Held-out human Q/A from a source the pipeline never trains on (the other-source likelihood set)."""

    source: Literal["project-faqs"]
    path: str  # project-faqs: "" = the pinned Debian packages as installed; else a copy of their files


@dataclass(frozen=True)
class DataParams(_Section):
    seed: SeedDataParams
    web: WebDataParams
    eval: EvalDataParams
    other: OtherDataParams


@dataclass(frozen=True)
class LoraParams(_Section):
    r: int
    alpha: int
    dropout: float
    target_modules: list[str]
    layers: int  # adapt only the top N transformer layers (0 = all): backward stops below the lowest adapted one


@dataclass(frozen=True)
class TrainParams(_Section):
    method: Literal["lora", "full"]
    tagging: bool  # S_a on seed pairs, S_w on augmented pairs (paper's "tags")
    mix: Literal["seed+augmented", "augmented"]  # what m1/m2 train on (seed alone is m0)
    max_seq_len: int
    overlong: Literal["truncate", "drop"]
    # the backward model reads this much of an output (0 = all), in training and augment alike
    backward_max_output_tokens: int
    epochs: float  # passes over the model's own examples; 0 = the paper's steps-by-data-size table
    batch_size: int  # 0 = the paper's rule (32, or 8 under 3,000 examples)
    micro_batch_size: int
    learning_rate: float
    final_learning_rate: float
    weight_decay: float
    dropout: float
    warmup_steps: int
    # auto = bfloat16 compute where bf16 matmuls are fast for training (training.compute_dtype), else float32
    dtype: Literal["auto", "float32", "bfloat16"]
    lora: LoraParams


# The engines (engines/factory.make_engine). auto: vLLM where a CUDA device and vLLM are present, else transformers.
ENGINES = ("auto", "transformers", "vllm", "openai")
# The stages that choose their own engine, each by `<stage>.engine` and `<stage>.api_model`, where the value
# `default` means generation.engine / generation.api_model; the server is runtime.<stage>_base_url, or
# runtime.base_url where that is "" (engines/factory.stage_settings).
DEFAULT = "default"
ENGINE_STAGES = ("augment", "curate", "respond", "evaluate")
EngineName = Literal[ENGINES]  # type: ignore[valid-type]
StageEngine = Literal[(DEFAULT, *ENGINES)]  # type: ignore[valid-type]


@dataclass(frozen=True)
class GenerationParams(_Section):
    # auto: vLLM where a CUDA device and vLLM are present, else transformers (engines/factory.resolve_engine)
    engine: EngineName
    # auto = bfloat16 where this machine has fast bf16 kernels (engines/models.resolve_dtype), else float32
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    temperature: float
    top_p: float
    api_model: str  # openai engine: the served model's name ("" = the server's first model)


@dataclass(frozen=True)
class AugmentParams(_Section):
    max_new_tokens: int
    max_instruction_chars: int
    echo_overlap: float  # drop an instruction when this share of its words comes straight from the segment
    filters: list[Literal["empty", "echo", "too_long", "not_instruction"]]  # post-filters applied, in order
    # Each stage's engine (ENGINE_STAGES): the defaults only spare code that builds a section by hand; a params
    # file must name both.
    engine: StageEngine = DEFAULT  # default = generation.engine
    api_model: str = DEFAULT  # openai engine: the served model's name; default = generation.api_model


# How a curator scores a pair: the names of humpback/curation/methods.py's table (the one place a method lives).
CurateMethod = Literal[methods.NAMES]  # type: ignore[valid-type]
CURATE_METHODS: tuple[str, ...] = methods.NAMES

# One threshold per method, each on its method's own scale, so switching `curate.method` never applies a
# threshold meant for another scale. A pair is kept when its score >= the method's threshold.
CurateThresholds = dataclasses.make_dataclass(
    "CurateThresholds", [(name, float) for name in methods.NAMES], bases=(_Section,), frozen=True
)


@dataclass(frozen=True)
class CurateParams(_Section):
    model: str  # "self" (the paper: M0 curates for M1, M1 for M2) or a model reference (see engines/models.py)
    method: Literal[(methods.NO_CURATION, *methods.NAMES)]  # type: ignore[valid-type]
    threshold: CurateThresholds  # type: ignore[valid-type]
    max_new_tokens: int
    max_retries: int
    max_pair_chars: int
    engine: StageEngine = DEFAULT  # score and score_dev; default = generation.engine
    api_model: str = DEFAULT  # openai engine: the served model's name; default = generation.api_model


@dataclass(frozen=True)
class IterationSelect(_Section):
    threshold: float | Literal["default"]  # default = curate.threshold.<curate.method>; else on that method's scale
    # The level as a rank: keep at most this share of the scored pairs, best first (1.0 = the threshold alone)
    top_share: float
    cap: int  # train on the N best-scored pairs at or above the level (0 = all of them)


@dataclass(frozen=True)
class SelectParams(_Section):
    """Selection applied to a scored iteration: cheap, so a threshold or cap sweep never re-scores."""

    iteration_1: IterationSelect
    iteration_2: IterationSelect


@dataclass(frozen=True)
class RespondParams(_Section):
    system_prompt: Literal["none", "S_a", "S_a+S_w"]
    max_new_tokens: int
    engine: StageEngine = DEFAULT  # default = generation.engine
    api_model: str = DEFAULT  # openai engine: the served model's name; default = generation.api_model


@dataclass(frozen=True)
class JudgeScoringParams(_Section):
    """How a method read (`evaluate.judge_read` other than pairwise) scores each answer: the judge's own settings,
    fixed across the conditions under test (curate.*, train.*), as curate's are for the curator. Field names are
    the ones `scoring.score_pairs` reads."""

    system_prompt: Literal["none", "S_a"]  # the system prompt every scoring prompt carries
    max_pair_chars: int  # question + answer cut to this many characters
    max_new_tokens: int  # generate read: the judge's reply length
    max_retries: int  # generate read: attempts again for an answer whose score did not parse


@dataclass(frozen=True)
class EvaluateParams(_Section):
    judge_model: str  # the local judge's weights (or tokenizer): "base" = models/base, else a folder or hub id
    reference: str  # a respond item (e.g. "base") or a path to an alpaca_eval outputs JSON
    max_chars: int  # outputs are cut to this many characters before judging (local judge context)
    # local judge: "pairwise" = alpaca_eval's prompt with both answers, read from P("m") vs P("M"); or a
    # curate method (or "length"): each answer scored alone by that method, the higher score wins
    judge_read: Literal["pairwise", "length", CurateMethod]
    judge_scoring: JudgeScoringParams  # the method read's own settings (never curate.* or train.tagging)
    # The judge's engine; default = generation.engine. openai with judge_read pairwise: alpaca_eval's API
    # annotator (OpenAI's API where no server URL is set, else that server); else the judges above, run on it
    engine: StageEngine = DEFAULT
    api_model: str = DEFAULT  # openai engine: the judge's model name; default = generation.api_model
    # judge_read pairwise: the alpaca_eval annotator config (its prompt and parser; humpback/evaluation/judges.py), e.g.
    # AlpacaEval 2's weighted_alpaca_eval_gpt4_turbo or AlpacaEval 1's alpaca_eval_gpt4 (API judges only)
    annotator: str = "weighted_alpaca_eval_gpt4_turbo"
    # the models judged against each other (m2 vs m0, ...) besides against the reference: off halves an API
    # judge's calls (docs/judges.md) and leaves the report's judged head-to-head comparisons empty
    head_to_head: bool = True


@dataclass(frozen=True)
class CurationQualityParams(_Section):
    positives: int
    negatives_per_kind: int
    methods: list[CurateMethod]  # scored on the dev set besides curate.method; answer length is always the baseline
    bootstrap: int  # resamples for the ROC-AUC 95% interval


@dataclass(frozen=True)
class LikelihoodParams(_Section):
    max_chars: int  # each human answer is cut to this many characters before it is scored
    # The instruments' own precision (generation.dtype's choices): bf16 rounding moves a question's value by
    # about as much as the differences between models that the instruments are there to resolve.
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    bootstrap: int  # resamples for the paired 95% interval over questions


@dataclass(frozen=True)
class ExportParams(_Section):
    """What users take away (humpback/evaluation/export/, docs/export.md): the curated dataset and standalone models."""

    models: list[Literal["m0", "m1", "m2"]]  # dvc.yaml's export_model foreach runs one stage per model listed
    dtype: Literal["base", "float32", "bfloat16", "float16"]  # the merged weights; base = the base folder's own
    dataset_license: str  # a Hub licence id for the dataset card; auto = the web source's licence where known


@dataclass(frozen=True)
class RayParams(_Section):
    """`runtime.cluster: ray`: the model stages' shards on Ray actors, each holding the stage's engine
    (humpback/engines/ray_cluster.py; docs/scale.md, "Ray cluster"). The cluster's auth token comes from Ray's
    own environment variables ($RAY_AUTH_TOKEN), never from here."""

    address: str  # "" = Ray's default: $RAY_ADDRESS, else the cluster `ray start` began here, else a new one here
    actors: int  # engines in the stage; 0 = as many as the cluster fits (its GPUs / num_gpus, else CPUs / num_cpus)
    num_cpus: float  # Ray resources per actor
    num_gpus: float  # per actor: 1 = one engine per GPU; 8 = one per 8-GPU node (vLLM tensor_parallel_size 8)
    threads: int  # torch threads per actor (Ray sets 1); 0 = this process's count, as the local run would use
    max_restarts: int  # a lost actor (process or node) is restarted this often; Ray retries its shard meanwhile


@dataclass(frozen=True)
class LauncherParams(_Section):
    """How the train stage starts its processes (humpback/training/launch.py; docs/scale.md, "Many GPUs")."""

    kind: Literal["single", "torchrun", "accelerate"]  # single = in the stage's own process
    processes: int  # per machine; 0 = torchrun's `auto` (one per GPU) / the accelerate config's num_processes
    config: str  # accelerate: the config file (e.g. configs/accelerate/fsdp.yaml); "" = accelerate's default
    # Across machines (docs/scale.md, "N nodes"): every node runs the same stage command, and they meet at one
    # address. Node rank and address usually come from the cluster's environment, since every node reads the
    # same params.yaml.
    nodes: int  # machines in the run (1 = this one only: torchrun --standalone)
    node_rank: int | Literal["env"]  # this machine's rank (accelerate's machine_rank); env: $NODE_RANK, $SLURM_NODEID
    rendezvous: str  # HOST:PORT of node 0, where the nodes meet; "" = $MASTER_ADDR:$MASTER_PORT (port 29500 if unset)
    srun: bool  # nodes > 1: the stage starts itself once per node with `srun` (in a Slurm allocation)


@dataclass(frozen=True)
class RuntimeParams(_Section):
    """How the work is executed, never what it computes: no stage lists this section in dvc.yaml, so changing
    it reruns nothing. Validated like the rest."""

    web_shard_size: int  # documents per resumable prepare_web shard
    augment_shard_size: int  # segments per resumable augment shard
    score_shard_size: int  # pairs per resumable scoring shard
    token_budget: int  # prompt + new tokens per batch (transformers engine)
    concurrency: int  # requests in flight (openai engine)
    base_url: str  # openai engine: the OpenAI-compatible server every stage uses unless it names its own
    augment_base_url: str  # augment.engine=openai: its server ("" = base_url)
    curate_base_url: str  # curate.engine=openai: score's and score_dev's server ("" = base_url)
    respond_base_url: str  # respond.engine=openai: its server ("" = base_url)
    evaluate_base_url: str  # evaluate.engine=openai: the judge's server ("" = base_url; both "" = OpenAI's API)
    tensor_parallel_size: int  # vllm engine
    gpu_memory_utilization: float  # vllm engine: the share of each GPU's memory it takes (weights + KV cache)
    cluster: Literal["local", "servers", "ray"]  # local: one engine (or one server); servers: spread over
    # `servers`; ray: shards on Ray actors (`ray`)
    servers: dict[str, list[str]]  # cluster servers: DVC stage instance (score@1, respond@m2) → base URLs
    ray: RayParams  # cluster ray: the cluster's address and the actors' resources
    save_steps: int  # training checkpoint frequency (resume granularity; 0 = none)
    launcher: LauncherParams  # the train stage: one process, or torchrun / accelerate launch


@dataclass(frozen=True)
class Params(_Section):
    seeds: SeedParams
    base: BaseParams
    data: DataParams
    train: TrainParams
    generation: GenerationParams
    augment: AugmentParams
    curate: CurateParams
    select: SelectParams
    respond: RespondParams
    evaluate: EvaluateParams
    curation_quality: CurationQualityParams
    likelihood: LikelihoodParams
    export: ExportParams
    runtime: RuntimeParams

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def values(self, keys: list[str] | tuple[str, ...]) -> dict[str, Any]:
        """{dotted key: value} of exactly `keys` (sections as dicts): what a model card or a resume
        fingerprint records, so they name the params a stage reads and nothing else."""
        out = {}
        for key in keys:
            value: Any = self
            for part in key.split("."):
                value = getattr(value, part)
            out[key] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return out


# Keys that moved: an old params file fails with the new place named, never with a bare "unknown key".
MOVED: dict[str, str] = {
    "base.seed": "seeds.sampling / seeds.training / seeds.generation (the held-out, dev and eval splits no "
    "longer depend on a seed)",
    "data.web.shard_size": "runtime.web_shard_size",
    "augment.shard_size": "runtime.augment_shard_size",
    "curate.shard_size": "runtime.score_shard_size",
    "generation.token_budget": "runtime.token_budget",
    "generation.concurrency": "runtime.concurrency",
    "generation.base_url": "runtime.base_url",
    "generation.tensor_parallel_size": "runtime.tensor_parallel_size",
    "evaluate.base_url": "runtime.evaluate_base_url",
    "runtime.judge_base_url": 'runtime.evaluate_base_url ("" = runtime.base_url; both "" = OpenAI\'s API)',
    "evaluate.judge": "evaluate.engine (local = default, transformers or vllm; openai = openai with no server "
    "URL; openai-compatible = openai with runtime.evaluate_base_url; the API judge's model name "
    "is evaluate.api_model, no longer evaluate.judge_model)",
    "train.save_steps": "runtime.save_steps",
    "train.max_steps": "train.epochs (training length in passes over each model's own examples; 0 = the paper's "
    "steps table)",
}


# ----------------------------------------------------------------------------------------- read tracking


def track_reads() -> set[str]:
    """Start recording the leaf keys code reads from any params object; return the (live) set."""
    global _reads
    _reads = set()
    return _reads


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
    for old, new in MOVED.items():  # before the schema check, so an old file gets the helpful message first
        node = raw
        for part in old.split("."):
            node = node.get(part) if isinstance(node, dict) and part in node else _ABSENT
        if node is not _ABSENT:
            raise ParamsError(f"{source}: '{old}' has moved to {new}")
    return _build(Params, raw, source, prefix="")


_ABSENT = object()


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: '{where}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ParamsError(f"{source}: unknown key '{prefix}{unknown[0]}' (allowed in '{where}': {', '.join(names)})")
    missing = [n for n in names if n not in raw]
    if missing:
        raise ParamsError(f"{source}: missing key '{prefix}{missing[0]}'")
    values = {n: _coerce(hints[n], raw[n], source, f"{prefix}{n}") for n in names}
    section = cls(**values)
    object.__setattr__(section, "_key_prefix", prefix)  # where it sits: a type may sit at two places
    return section


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, prefix=key + ".")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ParamsError(f"{source}: '{key}' must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is dict:
        key_tp, item_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ParamsError(f"{source}: '{key}' must be a mapping, got {type(value).__name__}")
        return {
            _coerce(key_tp, k, source, f"{key} key {k!r}"): _coerce(item_tp, v, source, f"{key}.{k}")
            for k, v in value.items()
        }
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


__all__ = [
    "CURATE_METHODS",
    "DEFAULT",
    "ENGINES",
    "ENGINE_STAGES",
    "MOVED",
    "Params",
    "ParamsError",
    "load_params",
    "parse_params",
    "track_reads",
]
