"""Engines: token-budget batching, per-record seeds independent of the batch, equality with plain
transformers (the OpenAI-compatible engine: tests/engines/test_openai_engine.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from humpback.engines.base import GREEDY, UNSET, EngineSettings, Sampling, record_seed, resolve_sampling
from humpback.engines.decoding import sample_token
from humpback.engines.factory import engine_settings, make_engine
from humpback.engines.tokens import encode_prompts, stop_token_ids, token_budget_batches
from humpback.engines.transformers_engine import TransformersEngine
from humpback.params import GenerationParams
from humpback.prompts import format_example
from tests.conftest import RUNTIME

PARAMS = GenerationParams(engine="transformers", dtype="float32", temperature=0.7, top_p=0.9, api_model="")
RUN = dataclasses.replace(RUNTIME, token_budget=6144, concurrency=4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """A 64-wide model runs faster on one thread: on a busy 2-core machine, thread hand-offs cost more than
    the arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return TransformersEngine(tiny_model_dir, PARAMS, RUN)


def prompts_for(tokenizer, users: list[str]) -> list[str]:
    return [format_example(tokenizer, user=u).prompt for u in users]


USERS = ["Hi.", "Tell me about Python decorators, " * 6, "Why is the sky blue?", "x " * 40, "Name a prime."]


# ----------------------------------------------------------------------------------------------- batching


def test_token_budget_batches_respect_the_budget_and_cover_every_prompt():
    lengths = [5, 100, 37, 64, 64, 12, 250, 3, 90]
    batches = token_budget_batches(lengths, max_new_tokens=20, budget=300)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        cost = len(batch) * (max(lengths[i] for i in batch) + 20)
        assert cost <= 300 or len(batch) == 1  # an over-budget prompt runs alone
    assert [250] in [[lengths[i] for i in b] for b in batches]  # 250 + 20 fits alone
    assert lengths[batches[0][0]] == max(lengths)  # longest first: memory errors show at once


def test_token_budget_batches_single_prompt_over_budget_runs_alone():
    assert token_budget_batches([500, 10], max_new_tokens=10, budget=100) == [[0], [1]]


# -------------------------------------------------------------------------------------- seeds and batching


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_output_does_not_depend_on_batch_composition(engine, temperature, monkeypatch):
    prompts = prompts_for(engine.tokenizer, USERS)
    seeds = [record_seed(0, i) for i in range(len(prompts))]
    # The random tiny model's next-token distribution is flat: top_p=0.002 still samples among ~100 tokens.
    kw = {"sampling": Sampling(temperature=temperature, top_p=0.002)}
    together = engine.generate(prompts, 8, seeds, **kw)
    alone = [engine.generate([p], 8, [s], **kw)[0] for p, s in zip(prompts, seeds)]
    reversed_ = engine.generate(prompts[::-1], 8, seeds[::-1], **kw)[::-1]
    monkeypatch.setattr(engine, "runtime", dataclasses.replace(RUN, token_budget=150))  # other batch cuts
    cut = engine.generate(prompts, 8, seeds, **kw)
    assert together == alone == reversed_ == cut
    assert all(together)


def test_a_call_overrides_only_the_sampling_it_names():
    def resolved(sampling: Sampling) -> tuple[float, float]:
        return resolve_sampling(PARAMS, ["a prompt"], [0], sampling)

    assert resolved(UNSET) == (0.7, 0.9) and resolved(GREEDY) == (0.0, 0.9)
    assert resolved(Sampling(temperature=1.0)) == (1.0, 0.9) and resolved(Sampling(top_p=0.5)) == (0.7, 0.5)
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        resolve_sampling(PARAMS, ["a", "b"], [0], UNSET)


def test_seed_changes_a_sample_and_fixes_it(engine):
    prompt = prompts_for(engine.tokenizer, ["Hi."])[0]
    a = engine.generate([prompt, prompt], 6, [1, 1], sampling=Sampling(temperature=1.0))
    b = engine.generate([prompt, prompt], 6, [1, 2], sampling=Sampling(temperature=1.0))
    assert a[0] == a[1] == b[0] and b[1] != b[0]


def test_greedy_equals_transformers_generate(engine):
    prompt = prompts_for(engine.tokenizer, ["Why is the sky blue?"])[0]
    ids = torch.tensor(encode_prompts(engine.tokenizer, [prompt]))
    with torch.no_grad():
        ref = engine.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=stop_token_ids(engine.tokenizer),
            pad_token_id=engine.tokenizer.pad_token_id,
        )
    expected = engine._decode(ref[0, ids.shape[1] :].tolist())
    assert engine.generate([prompt], 12, [0], sampling=GREEDY) == [expected]


def test_decode_stops_at_the_end_of_turn_token(engine):
    eot = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    hello = engine.tokenizer.encode("Hello", add_special_tokens=False)
    assert engine._decode(hello + [eot] + hello) == "Hello"


def test_sample_token_with_tiny_top_p_is_greedy():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert {sample_token(logits, torch.Generator().manual_seed(s), 1.0, 1e-6) for s in range(20)} == {1}
    drawn = {sample_token(logits, torch.Generator().manual_seed(s), 1.0, 0.9) for s in range(50)}
    assert drawn == {1, 2}  # 3.0 and 2.9 hold ~90% of the mass: the nucleus excludes the tail


# -------------------------------------------------------------------------------------- next-token logprobs


def reference_logprobs(engine, prompt: str, candidates: list[str]) -> list[float]:
    ids = torch.tensor(encode_prompts(engine.tokenizer, [prompt]))
    with torch.no_grad():
        logits = engine.model(ids).logits[0, -1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return [float(logprobs[engine.tokenizer.encode(c, add_special_tokens=False)[0]]) for c in candidates]


@pytest.mark.parametrize("shared_prefix", [False, True])
def test_next_token_logprobs_equal_a_plain_forward_pass(engine, shared_prefix):
    rubric = "Rate the following text on a scale from one to five, thinking about clarity and accuracy. " * 3
    users = [(rubric if shared_prefix else "") + u for u in USERS]
    prompts = [p + "Score: " for p in prompts_for(engine.tokenizer, users)]
    candidates = ["1", "2", "3", "4", "5"]
    rows = engine.next_token_logprobs(prompts, candidates)
    for prompt, row in zip(prompts, rows):
        assert row == pytest.approx(reference_logprobs(engine, prompt, candidates), abs=1e-4)


def test_next_token_logprobs_candidate_in_context(engine):
    """ " 4" after "Score:" is two tokens in SmolLM2's tokenizer (a space, then 4): its first token is the
    space, the same for every digit."""
    prompt = prompts_for(engine.tokenizer, ["x"])[0] + "Score:"
    (row,) = engine.next_token_logprobs([prompt], [" 4", " 5"])
    assert row[0] == row[1]


# ------------------------------------------------------------------------------------------- other engines


def test_vllm_engine_explains_how_to_install(tiny_model_dir):
    try:
        import vllm  # noqa: F401
    except ImportError:
        # The checkout's own install (its gpu lock and extra), not `pip install humpback[gpu]`, which asks
        # PyPI for a package of that name.
        with pytest.raises(
            ImportError,
            match=r"pip install -r requirements/gpu.lock then pip install --no-deps "
            r"-e '\.\[dev,gpu\]'",
        ) as raised:
            make_engine(tiny_model_dir, engine_settings(dataclasses.replace(PARAMS, engine="vllm"), RUN))
        assert "humpback[gpu]" not in str(raised.value)
    else:
        pytest.skip("vLLM is installed")


def test_record_seed_is_stable_and_31_bit():
    assert record_seed(0, "seg-1") == record_seed(0, "seg-1") != record_seed(1, "seg-1")
    assert 0 <= record_seed(0, "seg-1") < 2**31


def test_auto_engine_is_vllm_only_with_a_cuda_device_and_vllm(monkeypatch):
    import importlib.util

    from humpback.engines.factory import resolve_engine

    assert resolve_engine("openai") == "openai"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_engine("auto") == "transformers"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "vllm" else real(name))
    assert resolve_engine("auto") == "transformers"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "vllm" else real(name))
    assert resolve_engine("auto") == "vllm"
    assert engine_settings(dataclasses.replace(PARAMS, engine="auto"), RUN).resolved()["engine"] == "vllm"


def test_auto_is_resolved_once_and_handed_down_as_it_is(tiny_model_dir, monkeypatch):
    """`engine_settings` is the one place `auto` becomes an engine and a dtype (the dtype for the kind of work);
    make_engine and load_model take what it resolved and refuse `auto` rather than resolve it a second time."""
    from humpback.engines import models
    from humpback.engines.models import load_model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(models, "fast_bfloat16", lambda compute_bound=False: not compute_bound)
    unresolved = dataclasses.replace(PARAMS, engine="auto", dtype="auto")
    settings = engine_settings(unresolved, RUN)
    assert settings.resolved() == {"engine": "transformers", "dtype": "bfloat16"}
    assert settings.runtime == RUN and settings.generation.temperature == PARAMS.temperature
    assert engine_settings(unresolved, RUN, reads_only=True).resolved()["dtype"] == "float32"
    engine = make_engine(tiny_model_dir, settings)
    assert isinstance(engine, TransformersEngine) and engine.model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown engine 'auto'"):
        make_engine(tiny_model_dir, EngineSettings(unresolved, RUN))
    with pytest.raises(ValueError, match="dtype 'auto'"):
        load_model(tiny_model_dir, "auto")
