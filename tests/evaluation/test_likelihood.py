"""The likelihood instruments: against a plain forward pass, the paired interval against scipy, the stage."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from humpback.evaluation.likelihood import (
    OTHER_SOURCE,
    SEED_HELDOUT,
    answer_likelihoods,
    compare_models,
    paired_difference,
    scored_texts,
)
from humpback.params import load_params
from humpback.prompts import S_A
from tests.conftest import RUNTIME

ROOT = Path(__file__).resolve().parents[2]

PAIRS = [
    {"id": "a", "instruction": "How do I reverse a list?", "output": "Call `xs.reverse()` or use `xs[::-1]`."},
    {
        "id": "b",
        "instruction": "What is a tuple?",
        "output": "An immutable sequence.\n\n```python\nt = (1, 2)\n```\nTuples can be dictionary keys. " * 6,
    },
    {"id": "c", "instruction": "Why?", "output": "Because."},
    {"id": "d", "instruction": "Is Python slow?", "output": "It depends on what you measure; " * 3},
]
MAX_CHARS = 120  # b is cut, the others are not


def engine_for(model_dir: Path, token_budget: int):
    from humpback.engines.transformers_engine import TransformersEngine

    params = load_params(ROOT / "params.yaml").generation
    return TransformersEngine(model_dir, replace(params, dtype="float32"), replace(RUNTIME, token_budget=token_budget))


def direct_mean_logprob(model, tokenizer, question: str, answer: str) -> tuple[float, int]:
    """One unpadded forward pass over [chat prompt with S_a][answer], written out without the library."""
    import torch

    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": S_A}, {"role": "user", "content": question}],
        add_generation_prompt=True,
        tokenize=False,
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    total = sum(float(logprobs[len(prompt_ids) + k - 1, t]) for k, t in enumerate(answer_ids))
    return total / len(answer_ids), len(answer_ids)


def test_instrument_equals_a_direct_forward_pass(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A budget this small puts rows of different lengths in one left-padded batch and splits the rest.
    engine = engine_for(tiny_model_dir, token_budget=400)
    got = answer_likelihoods(engine, PAIRS, "S_a", MAX_CHARS)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    want = [direct_mean_logprob(model, tokenizer, p["instruction"], p["output"][:MAX_CHARS].rstrip()) for p in PAIRS]
    assert [i["id"] for i in got["items"]] == ["a", "b", "c", "d"]
    assert [i["tokens"] for i in got["items"]] == [n for _, n in want]
    assert [i["logprob"] for i in got["items"]] == pytest.approx([v for v, _ in want], abs=1e-4)
    assert got["mean"] == pytest.approx(np.mean([v for v, _ in want]), abs=1e-4)
    assert got["n"] == 4 and got["tokens"] == sum(n for _, n in want)


def test_scored_text_is_the_inference_prompt_and_the_answer_without_end_of_turn(tiny_tokenizer):
    prompts, completions = scored_texts(tiny_tokenizer, PAIRS[:2], "S_a", MAX_CHARS)
    assert prompts[0].endswith("<|im_start|>assistant\n") and S_A in prompts[0]
    assert completions == [PAIRS[0]["output"], PAIRS[1]["output"][:MAX_CHARS].rstrip()]
    none_prompts, _ = scored_texts(tiny_tokenizer, PAIRS[:1], "none", MAX_CHARS)
    assert S_A not in none_prompts[0]


@pytest.mark.parametrize("system_prompt", ["none", "S_a", "S_a+S_w"])
def test_each_question_is_read_as_respond_prompts_it(tiny_tokenizer, system_prompt):
    """respond.system_prompt belongs to the condition, not the instrument (docs/instruments.md): whichever
    inference prompt a run gives its models, the likelihood reads prompt each question exactly as respond does."""
    from humpback.evaluation.responses import respond

    class Recorder:
        tokenizer = tiny_tokenizer

        def generate(self, prompts, max_new_tokens, seeds, desc=""):
            self.prompts = list(prompts)
            return [""] * len(prompts)

    engine = Recorder()
    respond(engine, PAIRS, "m2", system_prompt, 8, 0)
    prompts, _ = scored_texts(tiny_tokenizer, PAIRS, system_prompt, MAX_CHARS)
    assert prompts == engine.prompts


def correlated_values(n: int = 40, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Two models' per-question values dominated by per-question difficulty (as real ones are), with a
    skewed small difference: a paired interval is far narrower than an unpaired one."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(-2.0, 0.6, n)
    a = difficulty + rng.exponential(0.05, n)
    b = difficulty + rng.normal(0.0, 0.02, n)
    return a, b


def test_paired_interval_matches_scipy_paired_percentile_bootstrap():
    from scipy.stats import bootstrap

    a, b = correlated_values()
    ids = [f"q{i}" for i in range(len(a))]
    ours = paired_difference(dict(zip(ids, a)), dict(zip(ids, b)), resamples=20000, seed=0)

    def diff_of_means(x, y, axis=-1):
        return x.mean(axis=axis) - y.mean(axis=axis)

    ref = bootstrap(
        (a, b), diff_of_means, paired=True, vectorized=True, method="percentile", n_resamples=20000, random_state=1
    )
    unpaired = bootstrap(
        (a, b), diff_of_means, paired=False, vectorized=True, method="percentile", n_resamples=20000, random_state=1
    )
    se = ref.standard_error
    assert ours["n"] == 40
    assert ours["difference"] == pytest.approx(float(a.mean() - b.mean()), abs=1e-12)
    # Two Monte Carlo runs of 20,000 resamples agree to a few hundredths of a standard error.
    assert ours["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=0.15 * se)
    assert ours["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=0.15 * se)
    # ... which is far closer than the unpaired interval is: the test tells pairing from no pairing.
    assert abs(unpaired.confidence_interval.low - ref.confidence_interval.low) > 5 * se


def test_paired_interval_is_seeded_and_pairs_by_id():
    a, b = correlated_values(n=15)
    ids = [f"q{i}" for i in range(15)]
    first = paired_difference(dict(zip(ids, a)), dict(zip(ids, b)), resamples=2000, seed=7)
    shuffled = dict(reversed(list(zip(ids, b))))  # same values, other order: pairing is by id
    assert paired_difference(dict(zip(ids, a)), shuffled, resamples=2000, seed=7) == first
    assert paired_difference(dict(zip(ids, a)), dict(zip(ids, b)), resamples=2000, seed=8) != first
    with pytest.raises(ValueError, match="same questions"):
        paired_difference(dict(zip(ids, a)), dict(zip(ids[1:], b[1:])), resamples=10, seed=0)


def test_compare_models_gives_scalar_leaves_per_pair_and_instrument():
    def result(values):
        return {"instruments": {SEED_HELDOUT: {"items": [{"id": k, "logprob": v} for k, v in values.items()]}}}

    results = {"m0": result({"x": -1.0, "y": -2.0, "z": -1.5}), "m2": result({"x": -0.9, "y": -1.8, "z": -1.5})}
    out = compare_models(results, [("m2", "m0")], resamples=500, seed=0)
    leaf = out["m2_vs_m0"][SEED_HELDOUT]
    assert set(leaf) == {"difference", "ci_low", "ci_high", "n"}
    assert leaf["difference"] == pytest.approx(0.1) and leaf["n"] == 3
    assert 0.0 <= leaf["ci_low"] <= leaf["difference"] <= leaf["ci_high"] <= 0.2 + 1e-12


def test_stage_writes_both_instruments(tiny_model_dir, tmp_path, monkeypatch):
    from stages import likelihood as stage

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["generation"]["dtype"] = "bfloat16"  # the instruments keep their own precision (likelihood.dtype)
    params["likelihood"]["max_chars"] = MAX_CHARS
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS[:2]))
    (tmp_path / "other.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS[2:]))
    out = tmp_path / "out" / "m0.json"
    assert (
        stage.main(
            [
                "--model",
                str(tiny_model_dir),
                "--name",
                "m0",
                "--heldout",
                str(tmp_path / "heldout.jsonl"),
                "--other",
                str(tmp_path / "other.jsonl"),
                "--out",
                str(out),
                "--params",
                str(tmp_path / "params.yaml"),
            ]
        )
        == 0
    )
    got = json.loads(out.read_text())
    assert got["model"] == "m0" and got["system_prompt"] == "S_a" and got["max_chars"] == MAX_CHARS
    assert got["dtype"] == "float32"
    assert [i["id"] for i in got["instruments"][SEED_HELDOUT]["items"]] == ["a", "b"]
    assert [i["id"] for i in got["instruments"][OTHER_SOURCE]["items"]] == ["c", "d"]
    assert got["instruments"][OTHER_SOURCE]["mean"] < 0
