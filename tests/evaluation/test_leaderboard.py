"""The paper's judge (evaluate.annotator: alpaca_eval_gpt4 through an API) and alpaca_eval's leaderboard row.

The API judge runs end to end against a fake OpenAI server on 127.0.0.1 answering in alpaca_eval_gpt4's ranking
format; the leaderboard row is checked against alpaca_eval's own annotator run on the same judgements.
"""

from __future__ import annotations

import csv
import dataclasses
import http.server
import json
import math
import re
import threading
from pathlib import Path

import pytest

from humpback.evaluation.head_to_head import (
    ALPACA_EVAL_PROMPTS,
    LEADERBOARD_COLUMNS,
    evaluate_models,
    leaderboard,
    protocol_switches,
)
from humpback.evaluation.judges import JudgeError, alpaca_eval_config, annotator_config, build_annotator, make_judge
from humpback.params import load_params
from humpback.storage.records import read_json, write_json

ROOT = Path(__file__).resolve().parents[2]
# alpaca_eval_gpt4's prompt: each answer inside "answer": """...""", model_1's first
ANSWER = re.compile(r'"answer": """(.*?)"""', re.DOTALL)
FIRST, SECOND = (
    "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]",
    "[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}]",
)


def ranking(prompt: str, position_bias: bool = False) -> str:
    """A GPT-4 stand-in in alpaca_eval_gpt4's output format: the longer answer ranks first (or, biased, always
    the one shown first)."""
    first, second = ANSWER.findall(prompt)
    return FIRST if position_bias or len(first) > len(second) else SECOND


class RankingServer:
    """OpenAI's chat completions endpoint on localhost, answering as `ranking` does; records each request."""

    def __init__(self):
        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                requests.append(body)
                text = ranking(body["messages"][-1]["content"])
                data = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                        ],
                        "usage": {"prompt_tokens": 300, "completion_tokens": 30, "total_tokens": 330},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _answers(n: int, width: int, name: str, step: int = 7) -> list[dict]:
    """alpaca_eval model_outputs for prompts alpaca-eval/0..n-1, answer i `width + (i * step) % 13` long."""
    return [
        {
            "id": f"alpaca-eval/{i}",
            "instruction": f"Question {i}?",
            "output": name[-1] * (width + (i * step) % 13),
            "generator": name,
        }
        for i in range(n)
    ]


def test_paper_profile_judges_through_the_api_with_alpaca_eval_gpt4(tmp_path, monkeypatch):
    """`make profile PROFILE=paper` then evaluate: alpaca_eval's own OpenAI decoder with AlpacaEval 1's annotator
    (gpt-4, the ranking prompt), against the references data.eval.reference carried; OpenAI's API is a fake server
    (OPENAI_BASE_URL). Metrics keep the both-orders figures and add the leaderboard row, also as CSV."""
    from humpback.profiles import apply
    from stages.evaluate import main

    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    apply("paper", params)
    server = RankingServer()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.chdir(tmp_path)
    n = 6
    reference = _answers(n, 20, "text_davinci_003")
    (tmp_path / "eval.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "id": r["id"],
                    "instruction": r["instruction"],
                    "reference": r["output"],
                    "reference_generator": "text_davinci_003",
                }
            )
            + "\n"
            for r in reference
        )
    )
    widths = {"m0": 5, "m1": 18, "m2": 30}  # m0 always shorter, m2 always longer, m1 either
    outputs = {name: _answers(n, width, name, step=3) for name, width in widths.items()}
    for name, answers in outputs.items():
        write_json(tmp_path / "responses" / f"{name}.json", answers)
    args = [
        "--responses",
        "responses",
        "--prompts",
        "eval.jsonl",
        "--models",
        *widths,
        "--judge-base",
        "unused",
        "--annotations",
        "annotations.json",
        "--metrics",
        "metrics/evaluate.json",
        "--plot",
        "wr.png",
        "--plot-data",
        "wr.csv",
        "--leaderboard",
        "metrics/leaderboard.csv",
        "--params",
        str(params),
    ]
    try:
        assert main(args) == 0
        metrics = read_json(tmp_path / "metrics/evaluate.json")
        calls = len(server.requests)
        # evaluate.head_to_head false: only the judgements against the reference, all in the judge's cache now
        params.write_text(params.read_text().replace("head_to_head: true", "head_to_head: false"))
        elsewhere = {"metrics/evaluate.json": "alone.json", "metrics/leaderboard.csv": "alone.csv"}
        again = [elsewhere.get(a, a) for a in args]
        assert main(again) == 0
        alone = read_json(tmp_path / "alone.json")
    finally:
        server.close()
    assert len(server.requests) == calls and alone["head_to_head"] == {} and metrics["head_to_head"]
    assert alone["models"] == metrics["models"] and alone["leaderboard"] == metrics["leaderboard"]
    assert metrics["judge"]["kind"] == "openai" and metrics["judge"]["model"] == "gpt-4"
    assert metrics["judge"]["annotator"] == "alpaca_eval alpaca_eval_gpt4, both orders"
    first = server.requests[0]
    assert first["model"] == "gpt-4" and first["temperature"] == 0 and first["max_tokens"] == 100
    assert "rank the models by the quality of their answers" in first["messages"][-1]["content"]
    # both orders against the reference (3 models x 6) and head to head (3 pairs x 6): one call each
    assert len(server.requests) == 2 * (3 * n + 3 * n)
    annotations = read_json(tmp_path / "annotations.json")
    assert len(annotations) == 3 * n * 2  # against the reference; head to head is in the metrics only
    # alpaca_eval prices each annotation from the tokens the API reported, at its price for gpt-4
    assert [a["preference_price_per_example"] for a in annotations] == pytest.approx([330 * 0.03 / 1000] * 3 * n * 2)
    longer = {
        name: sum(len(m["output"]) > len(r["output"]) for m, r in zip(answers, reference)) / n
        for name, answers in outputs.items()
    }
    assert longer["m0"] == 0 and 0 < longer["m1"] < 1 and longer["m2"] == 1
    board = metrics["leaderboard"]
    assert board["annotator"] == "alpaca_eval_gpt4" and board["reference"] == "text_davinci_003"
    for name in widths:
        both, row = metrics["models"][name], board["models"][name]
        assert both["discrete_win_rate"] == pytest.approx(100 * longer[name]) and both["order_agreement"] == 1.0
        assert row["win_rate"] == pytest.approx(100 * longer[name]) and row["n_total"] == n
        assert row["n_wins"] + row["n_wins_base"] + row["n_draws"] == n and row["outputs_cut"] == 0
        assert row["avg_length"] == int(sum(len(a["output"]) for a in outputs[name]) / n)
        assert row["length_controlled_winrate"] is None
        assert "weighted_alpaca_eval_gpt4_turbo only" in row["length_controlled_reason"]
    with open(tmp_path / "metrics/leaderboard.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["", *LEADERBOARD_COLUMNS]
    assert [r[0] for r in table[1:]] == list(widths)
    assert float(table[3][1]) == pytest.approx(100 * longer["m2"]) and table[3][-2] == ""


def test_the_leaderboard_row_is_alpaca_evals_own_protocol(tmp_path):
    """A judge that always prefers the answer shown first scores 50 in both orders; on alpaca_eval's protocol it
    scores whatever the annotator's seeded order gives. The row equals alpaca_eval's own PairwiseAnnotator
    (is_randomize_output_order from the config, seed 0) run with the same judge, and costs no extra judging."""
    from alpaca_eval.annotators import PairwiseAnnotator
    from alpaca_eval.metrics import get_winrate

    class FirstShownWins:
        calls = 0

        def __call__(self, prompts, **_):
            FirstShownWins.calls += len(prompts)
            return {"completions": [ranking(p, position_bias=True) for p in prompts]}

    name, n = "alpaca_eval_gpt4", 16
    reference, model = _answers(n, 20, "text_davinci_003"), _answers(n, 25, "m1")
    ours = build_annotator(alpaca_eval_config(name), "stub", tmp_path / "ours", fn_completions=FirstShownWins())
    models, annotations = evaluate_models(ours, {"m1": model}, reference, max_chars=10_000)
    assert models["m1"]["win_rate"] == pytest.approx(50.0) and models["m1"]["position_bias"] is True
    calls = FirstShownWins.calls
    board = leaderboard(annotations, {"m1": model}, reference, [], annotator_config(name), name, 10_000)
    assert FirstShownWins.calls == calls  # read from the judgements already made

    config = annotator_config(name)  # alpaca_eval's own, its output order randomised
    assert config.get("is_randomize_output_order", True)
    folder = tmp_path / "theirs"
    folder.mkdir()
    stub = {k: v for k, v in config.items() if k not in ("fn_completions", "completions_kwargs")}
    (folder / "configs.yaml").write_text(
        json.dumps({"stub": {**stub, "prompt_template": alpaca_eval_config(name)["prompt_template"]}})
    )
    theirs = PairwiseAnnotator(
        annotators_config=str(folder / "configs.yaml"), caching_path=None, fn_completions=FirstShownWins()
    )
    expected = get_winrate(theirs.annotate_head2head(outputs_1=reference, outputs_2=model))
    row = board["models"]["m1"]
    switched = protocol_switches([m["instruction"] for m in model], config)
    assert 0 < sum(switched) < n  # the randomisation shows each side first somewhere
    assert row["win_rate"] == pytest.approx(100 * sum(switched) / n)
    for key in ("win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total", "discrete_win_rate"):
        assert row[key] == pytest.approx(expected[key]), key
    # no randomisation in the config: always the reference first, as alpaca_eval would show it
    assert protocol_switches(["a", "b"], {"is_randomize_output_order": False}) == [False, False]


def test_the_annotator_is_checked_and_names_the_judge(tmp_path, monkeypatch):
    """A local engine cannot run a text-parsing annotator (it reads next-token log-probabilities): refused, naming
    it. An unknown name or one the openai engine cannot run is refused too; the annotator is part of the id."""
    from humpback.engines.factory import stage_settings

    shipped = load_params(ROOT / "params.yaml")
    assert shipped.evaluate.annotator == "weighted_alpaca_eval_gpt4_turbo" and shipped.evaluate.head_to_head

    def judge(engine: str, annotator: str, url: str = ""):
        settings = dataclasses.replace(
            shipped.evaluate, engine=engine, judge_read="pairwise", annotator=annotator, api_model="served"
        )
        params = dataclasses.replace(
            shipped, evaluate=settings, runtime=dataclasses.replace(shipped.runtime, evaluate_base_url=url)
        )
        judge_engine = stage_settings(params, "evaluate")
        return make_judge(settings, judge_engine, tmp_path / "no-model", cache_root=tmp_path / "cache")

    with pytest.raises(JudgeError, match=r"alpaca_eval_gpt4 parses generated text \(ranking_parser\).*local judge"):
        judge("transformers", "alpaca_eval_gpt4")
    with pytest.raises(JudgeError, match="'gpt5_judge' is not an alpaca_eval annotator config"):
        judge("openai", "gpt5_judge", "http://x/v1")
    with pytest.raises(JudgeError, match="claude completes through 'anthropic_completions'"):
        judge("openai", "claude", "http://x/v1")
    _, ae1 = judge("openai", "alpaca_eval_gpt4", "http://x/v1")
    _, ae2 = judge("openai", "weighted_alpaca_eval_gpt4_turbo", "http://x/v1")
    assert ae1["annotator"] == "alpaca_eval_gpt4" and ae1["id"] != ae2["id"]
    assert (tmp_path / "cache" / ae1["id"] / "configs.yaml").is_file()
    # a local judge: two logprob annotators with the same prompt still keep their annotations apart
    (tmp_path / "no-model").mkdir()
    (tmp_path / "no-model" / "config.json").write_text("{}")
    _, turbo = judge("transformers", "weighted_alpaca_eval_gpt4_turbo")
    _, mini = judge("transformers", "weighted_alpaca_eval_gpt-4o-mini-2024-07-18")
    assert turbo["annotator"] != mini["annotator"] and turbo["id"] != mini["id"]


def _hub_cache_with_df_gamed(folder: Path) -> None:
    """A Hugging Face hub cache holding a made-up df_gamed.csv (two gamed models on 805 prompts), the layout
    hf_hub_download reads offline."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = [
        {
            "model": model,
            "index": i,
            "instruction_difficulty": math.sin(i),
            "not_gamed_baseline": False,
            "std_delta_len": float(rng.normal()),
            "preference": float(rng.uniform()),
        }
        for model in ("gamed_concise", "gamed_verbose")
        for i in range(ALPACA_EVAL_PROMPTS)
    ]
    repo = folder / "datasets--tatsu-lab--alpaca_eval"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    pd.DataFrame(rows).to_csv(repo / "snapshots" / commit / "df_gamed.csv", index=False)


def test_length_controlled_win_rate_only_where_alpaca_eval_defines_it(tmp_path, monkeypatch):
    """AlpacaEval 2's annotator, its reference, its 805 prompts in order, whole answers and df_gamed.csv in the
    hub cache: alpaca_eval's GLM runs (offline); take any one away and the value is null with the reason."""
    import huggingface_hub.constants
    from alpaca_eval import constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "DEFAULT_CACHE_DIR", str(tmp_path / "hub"))
    name, n = "weighted_alpaca_eval_gpt4_turbo", ALPACA_EVAL_PROMPTS
    reference, model = _answers(n, 20, "gpt4_1106_preview"), _answers(n, 20, "m1", step=5)
    prompts = [{"id": r["id"], "instruction": r["instruction"]} for r in reference]
    # the judge's verdicts as evaluate_models leaves them: the model wins where its answer is longer
    annotations = [
        {
            "model": "m1",
            "pair": m["id"],
            "instruction": m["instruction"],
            "order": order,
            "model_preference": 2.0 if len(m["output"]) > len(r["output"]) else 1.0,
        }
        for m, r in zip(model, reference)
        for order in ("reference_first", "model_first")
    ]

    def row(**change):
        args = {"reference": reference, "prompts": prompts, "annotator": name, "max_chars": 10_000, **change}
        board = leaderboard(
            annotations,
            {"m1": model},
            args["reference"],
            args["prompts"],
            annotator_config(args["annotator"]),
            args["annotator"],
            args["max_chars"],
        )
        return board["models"]["m1"]

    assert "df_gamed.csv" in row()["length_controlled_reason"]
    _hub_cache_with_df_gamed(tmp_path / "hub")
    lc = row()
    assert lc["length_controlled_reason"] is None and 0 < lc["length_controlled_winrate"] < 100
    longer = sum(len(m["output"]) > len(r["output"]) for m, r in zip(model, reference))
    assert 0 < longer < n and lc["win_rate"] == pytest.approx(100 * longer / n) and lc["lc_standard_error"] > 0
    other = [{**r, "generator": "text_davinci_003"} for r in reference]
    assert "reference here is text_davinci_003" in row(reference=other)["length_controlled_reason"]
    assert "all 805 AlpacaEval prompts" in row(prompts=prompts[:-1])["length_controlled_reason"]
    assert "cut to evaluate.max_chars" in row(max_chars=25)["length_controlled_reason"]
    assert "this judge is annotator alpaca_eval_gpt4" in row(annotator="alpaca_eval_gpt4")["length_controlled_reason"]
