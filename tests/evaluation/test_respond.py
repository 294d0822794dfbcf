"""respond: prompts through the chat template, per-record seeds, alpaca_eval model_outputs that alpaca_eval loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from humpback.engines.base import record_seed
from humpback.evaluation.responses import respond
from humpback.prompts import S_A, S_W
from humpback.storage.records import read_json, write_jsonl

RECORDS = [
    {"id": "mt-81", "instruction": "Write a haiku about the sea.", "dataset": "mt-bench", "category": "writing"},
    {"id": "mt-82", "instruction": "What is 2 + 2?", "dataset": "mt-bench", "category": "math"},
    {"id": "mt-83", "instruction": "Name a colour.", "dataset": "mt-bench", "category": "stem"},
]


class FakeEngine:
    """Answers with the seed it was given, so tests can see which seed each prompt got."""

    def __init__(self, tokenizer, prefix: str = ""):
        self.tokenizer = tokenizer
        self.prefix = prefix
        self.calls = []

    def generate(self, prompts, max_new_tokens, seeds, *, sampling=None, desc=""):
        self.calls.append({"prompts": prompts, "max_new_tokens": max_new_tokens, "seeds": seeds})
        return [f"  {self.prefix}answer {s} \n" for s in seeds]


def test_rows_are_alpaca_eval_model_outputs(tiny_tokenizer):
    engine = FakeEngine(tiny_tokenizer)
    rows = respond(engine, RECORDS, "m1", "S_a", max_new_tokens=17, seed=0)
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in RECORDS]
    for row, rec in zip(rows, RECORDS):
        assert set(row) >= {"instruction", "output", "generator", "dataset", "id"}
        assert row["generator"] == "m1" and row["dataset"] == "mt-bench" and row["id"] == rec["id"]
        assert row["output"] == row["output"].strip()
    call = engine.calls[0]
    assert call["max_new_tokens"] == 17
    assert all(S_A in p and S_W not in p for p in call["prompts"])
    assert all(rec["instruction"] in p for rec, p in zip(RECORDS, call["prompts"]))


@pytest.mark.parametrize("choice, present, absent", [("none", [], [S_A, S_W]), ("S_a+S_w", [S_A, S_W], [])])
def test_system_prompt_ablation(tiny_tokenizer, choice, present, absent):
    engine = FakeEngine(tiny_tokenizer)
    respond(engine, RECORDS[:1], "m2", choice, max_new_tokens=8, seed=0)
    prompt = engine.calls[0]["prompts"][0]
    assert all(s in prompt for s in present) and not any(s in prompt for s in absent)


def test_seed_depends_on_record_not_on_position(tiny_tokenizer):
    engine = FakeEngine(tiny_tokenizer)
    all_rows = respond(engine, RECORDS, "m0", "S_a", 8, seed=0)
    some_rows = respond(engine, RECORDS[1:], "m0", "S_a", 8, seed=0)
    assert all_rows[1:] == some_rows
    assert record_seed(0, "mt-81") != record_seed(1, "mt-81")
    assert len({record_seed(0, r["id"]) for r in RECORDS}) == len(RECORDS)


def test_stage_output_loads_in_alpaca_eval(tmp_path, monkeypatch, tiny_tokenizer):
    from alpaca_eval.utils import load_or_convert_to_dataframe

    from stages import respond as stage

    write_jsonl(tmp_path / "eval.jsonl", RECORDS)
    import humpback.engines.factory

    monkeypatch.setattr(humpback.engines.factory, "make_engine", lambda model_dir, settings: FakeEngine(tiny_tokenizer))
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    out = tmp_path / "responses" / "m1.json"
    rc = stage.main(
        [
            "--model",
            "models/m1",
            "--name",
            "m1",
            "--prompts",
            str(tmp_path / "eval.jsonl"),
            "--out",
            str(out),
            "--params",
            str(params),
        ]
    )
    assert rc == 0
    df = load_or_convert_to_dataframe(out)
    assert list(df["instruction"]) == [r["instruction"] for r in RECORDS]
    assert set(df["generator"]) == {"m1"} and {"output", "dataset"} <= set(df.columns)
    assert read_json(out)[0]["id"] == "mt-81"


def test_two_outputs_files_go_through_alpaca_eval_head2head(tmp_path, tiny_tokenizer):
    """alpaca_eval's own head-to-head entry point accepts our files as they are."""
    from alpaca_eval.metrics import get_winrate
    from alpaca_eval.utils import load_or_convert_to_dataframe

    from humpback.evaluation.judges import alpaca_eval_config, build_annotator, logprob_completion
    from humpback.storage.records import write_json

    for name in ("base", "m1"):
        engine = FakeEngine(tiny_tokenizer, prefix=f"{name}'s ")
        write_json(tmp_path / f"{name}.json", respond(engine, RECORDS, name, "S_a", 8, seed=0))

    def second_wins(prompts, **_):
        done = [logprob_completion({"m": -5.0, "M": -0.01}) for _ in prompts]
        return {"completions": [c["text"] for c in done], "completions_all": done}

    annotator = build_annotator(alpaca_eval_config(), "stub", tmp_path / "cache", fn_completions=second_wins)
    annotated = annotator.annotate_head2head(
        outputs_1=load_or_convert_to_dataframe(tmp_path / "base.json"),
        outputs_2=load_or_convert_to_dataframe(tmp_path / "m1.json"),
    )
    assert len(annotated) == len(RECORDS)
    assert {a["generator_2"] for a in annotated} == {"m1"}
    assert get_winrate(annotated)["win_rate"] > 99  # the judge always picks output_2 ("M")


def test_respond_with_real_engine_on_tiny_model(tiny_model_dir):
    from humpback.engines.factory import make_engine, stage_settings
    from humpback.params import load_params

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    engine = make_engine(tiny_model_dir, stage_settings(params, "respond"))  # what stages/respond.py builds
    first = respond(engine, RECORDS, "m0", "S_a", max_new_tokens=4, seed=0)
    again = respond(engine, list(reversed(RECORDS)), "m0", "S_a", max_new_tokens=4, seed=0)
    assert [r["output"] for r in first] == [r["output"] for r in reversed(again)]  # per-record seeds
    assert all(isinstance(r["output"], str) for r in first)
