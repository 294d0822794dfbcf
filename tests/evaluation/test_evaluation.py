"""Evaluation through alpaca_eval's own machinery (PairwiseAnnotator, logprob_parser, get_winrate) with stub judges."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from humpback.evaluation.head_to_head import evaluate_models, order_stats, reference_path
from humpback.evaluation.judges import alpaca_eval_config, build_annotator, judge_prompt, logprob_completion
from humpback.storage.records import read_json, write_json

OUTPUT = re.compile(r'"model_identifier": "(m|M)",\s*"output": """(.*?)"""', re.DOTALL)


def _outputs_in(prompt: str) -> dict[str, str]:
    return dict(OUTPUT.findall(prompt))


class LongerWins:
    """A judge (alpaca_eval fn_completions) that is sure the longer answer is better; counts its calls."""

    def __init__(self, unparsable: str | None = None):
        self.calls = 0
        self.unparsable = unparsable

    def __call__(self, prompts, **_):
        self.calls += len(prompts)
        completions = []
        for p in prompts:
            outs = _outputs_in(p)
            if self.unparsable and self.unparsable in outs["m"] + outs["M"]:
                completions.append(logprob_completion({"Both": -0.1}))  # neither m nor M: unparsable
                continue
            first_longer = len(outs["m"]) > len(outs["M"])
            completions.append(
                logprob_completion({"m": 0.0 if first_longer else -40.0, "M": -40.0 if first_longer else 0.0})
            )
        return {"completions": [c["text"] for c in completions], "completions_all": completions}


def _data(n: int = 12):
    # odd model lengths, even reference lengths: never a tie
    reference = [
        {"instruction": f"question {i}", "output": "r" * (10 + 2 * i), "generator": "base", "id": f"q{i}"}
        for i in range(n)
    ]
    model = [
        {"instruction": f"question {i}", "output": "x" * (6 * i + 1), "generator": "m1", "id": f"q{i}"}
        for i in range(n)
    ]
    return reference, model


def test_longer_answer_judge_gives_share_of_longer_outputs(tmp_path):
    reference, model = _data()
    judge = LongerWins()
    annotator = build_annotator(alpaca_eval_config(), "stub", tmp_path / "cache", fn_completions=judge)
    models, annotations = evaluate_models(annotator, {"m1": model}, reference, max_chars=1000)
    longer = sum(len(m["output"]) > len(r["output"]) for m, r in zip(model, reference)) / len(model)
    m1 = models["m1"]
    assert m1["win_rate"] == pytest.approx(100 * longer, abs=1e-6)
    assert m1["n"] == len(model) and m1["unparsed"] == 0
    assert m1["order_agreement"] == 1.0 and m1["position_bias"] is False
    assert m1["standard_error"] > 0
    assert m1["avg_length"] == pytest.approx(sum(len(m["output"]) for m in model) / len(model))
    assert m1["length_controlled"] is None
    assert len(annotations) == 2 * len(model) and judge.calls == 2 * len(model)
    assert {a["order"] for a in annotations} == {"reference_first", "model_first"}


def test_head_to_head_against_a_direct_count_with_a_bootstrap_interval(tmp_path):
    """m2 against m0 on the same prompts: the longer-answer judge's win share, minus 50, with an interval that
    brackets it; and the data reference reads the references the eval rows carry."""
    from humpback.evaluation.head_to_head import head_to_head, load_reference

    reference, model = _data(12)
    annotator = build_annotator(alpaca_eval_config(), "stub", tmp_path / "cache", fn_completions=LongerWins())
    result = head_to_head(annotator, {"m2": model, "m0": reference}, 1000, resamples=2000)
    longer = sum(len(m["output"]) > len(r["output"]) for m, r in zip(model, reference)) / len(model)
    m2 = result["m2_vs_m0"]
    assert m2["difference"] == pytest.approx(100 * longer - 50, abs=1e-3) and m2["n"] == 12
    assert m2["ci_low"] < m2["difference"] < m2["ci_high"]
    prompts = [
        {
            "id": r["id"],
            "instruction": r["instruction"],
            "reference": r["output"],
            "reference_generator": "text_davinci_003",
        }
        for r in reference
    ]
    rows = load_reference("data", tmp_path, prompts)
    assert rows[0] == {"instruction": "question 0", "output": reference[0]["output"], "generator": "text_davinci_003"}
    with pytest.raises(ValueError, match="data.eval.reference"):
        load_reference("data", tmp_path, [{"id": "q", "instruction": "q"}])


def test_cached_annotations_are_not_rejudged(tmp_path):
    reference, model = _data(6)
    first = LongerWins()
    evaluate_models(
        build_annotator(alpaca_eval_config(), "stub", tmp_path, fn_completions=first),
        {"m1": model},
        reference,
        max_chars=1000,
    )
    again = LongerWins()
    models, _ = evaluate_models(
        build_annotator(alpaca_eval_config(), "stub", tmp_path, fn_completions=again),
        {"m1": model},
        reference,
        max_chars=1000,
    )
    assert first.calls == 12 and again.calls == 0
    assert models["m1"]["n"] == 6


def test_unparsable_judgements_are_counted_not_fatal(tmp_path):
    reference, model = _data(6)
    model[2]["output"] = "UNPARSABLE " + model[2]["output"]
    annotator = build_annotator(alpaca_eval_config(), "stub", tmp_path, fn_completions=LongerWins("UNPARSABLE"))
    models, annotations = evaluate_models(annotator, {"m1": model}, reference, max_chars=1000)
    assert models["m1"]["unparsed"] == 2  # both orders of that pair
    assert models["m1"]["n"] == 5
    assert sum(a["preference"] is None for a in annotations) == 2


def test_outputs_are_cut_before_judging(tmp_path):
    reference, model = _data(4)
    seen = []

    def judge(prompts, **_):
        seen.extend(_outputs_in(p)["m"] for p in prompts)
        return LongerWins()(prompts)

    evaluate_models(
        build_annotator(alpaca_eval_config(), "stub", tmp_path, fn_completions=judge),
        {"m1": model},
        reference,
        max_chars=7,
    )
    assert seen and max(len(s) for s in seen) == 7


def test_order_agreement_and_position_bias():
    # always prefers the first answer: it contradicts itself on every swap
    first = order_stats([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert first["order_agreement"] == 0.0 and first["first_position_win_share"] == 1.0
    assert first["position_bias"] is True
    # consistent judge: model wins pair 0 (2 then 1), loses pair 1 (1 then 2)
    fair = order_stats([2.0, 1.0], [1.0, 2.0])
    assert fair["order_agreement"] == 1.0 and fair["first_position_win_share"] == 0.5
    assert fair["position_bias"] is False
    # one of four pairs flips; unparsed pairs are left out of the agreement
    mixed = order_stats([2.0, 1.0, 1.8, 1.0, None], [1.0, 2.0, 1.9, 2.0, 1.0])
    assert mixed["order_agreement"] == pytest.approx(3 / 4)
    nothing = order_stats([None], [None])
    assert nothing["order_agreement"] is None and nothing["position_bias"] is None


def test_logprob_completion_is_read_by_alpaca_eval_parser():
    from alpaca_eval.completion_parsers import logprob_parser

    kwargs = alpaca_eval_config()["completion_parser_kwargs"]
    completion = logprob_completion({"m": math.log(0.2), "M": math.log(0.6)})
    assert logprob_parser(completion, **kwargs) == [pytest.approx(2 - 0.2 / 0.8)]
    unusable = logprob_completion({"m": float("-inf"), "M": float("nan")})
    assert math.isnan(logprob_parser(unusable, **kwargs)[0])


def test_config_keeps_alpaca_eval_prompt_and_fixes_order():
    config = alpaca_eval_config()
    assert config["fn_completion_parser"] == "logprob_parser"
    assert config["completion_parser_kwargs"]["numerator_token"] == "m"
    assert config["is_randomize_output_order"] is False
    template = Path(config["prompt_template"]).read_text()
    assert "m or M" in template and "{output_1}" in template


def test_judge_prompt_uses_the_judge_models_chat_template(tiny_tokenizer):
    from humpback.prompts import format_example

    template = Path(alpaca_eval_config()["prompt_template"]).read_text()
    prompt = template.replace("{instruction}", "Say hi").replace("{output_1}", "hi").replace("{output_2}", "hello")
    rendered = judge_prompt(tiny_tokenizer, prompt)
    system = "You are a highly efficient assistant"
    assert rendered.count("Say hi") == 1 and system in rendered
    assert rendered.count("<|im_start|>system") == 1  # alpaca_eval's markers parsed, not nested as text
    assert (
        rendered
        == format_example(
            tiny_tokenizer,
            user=rendered.split("user\n", 1)[1].split("<|im_end|>")[0],
            system=rendered.split("system\n", 1)[1].split("<|im_end|>")[0],
        ).prompt
    )
    assert rendered.rstrip().endswith("assistant")


def test_reference_path():
    assert reference_path("base", "data/responses") == Path("data/responses/base.json")
    assert reference_path("refs/gpt4.json", "data/responses") == Path("refs/gpt4.json")


class FakeJudgeEngine:
    """Stands in for the generation engine under the local judge: longer answer wins."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.prompts = []

    def next_token_logprobs(self, prompts, candidates, *, desc=""):
        self.prompts += prompts
        rows = []
        for p in prompts:
            outs = _outputs_in(p)
            first = len(outs["m"]) > len(outs["M"])
            rows.append([-0.1 if first else -3.0, -3.0 if first else -0.1])
        return rows


def evaluate_stage_inputs(folder: Path, edit: Callable[[dict], None], judge_dir: Path | None = None) -> list[str]:
    """The evaluate stage's inputs in `folder` (m0's and m1's answers to 5 prompts, the base's as the reference,
    the same prompts as in-domain questions with human answers) and its params file (the shipped one, the judge
    on the transformers engine, then `edit`); returns the stage's arguments, outputs relative to the cwd."""
    reference, model = _data(5)
    responses = folder / "responses"
    write_json(responses / "base.json", reference)
    for name in ("m0", "m1"):
        write_json(responses / f"{name}.json", [{**m, "generator": name} for m in model])
        write_json(folder / "indomain" / f"{name}.json", [{**m, "generator": name} for m in model])
    if judge_dir is None:
        judge_dir = folder / "judge"
        judge_dir.mkdir()
        (judge_dir / "config.json").write_text("{}")
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params["evaluate"]["engine"] = "transformers"
    edit(params)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    prompts = folder / "eval.jsonl"
    prompts.write_text("".join(json.dumps({"id": r["id"], "instruction": r["instruction"]}) + "\n" for r in reference))
    indomain = folder / "heldout.jsonl"
    indomain.write_text(
        "".join(
            json.dumps({"id": r["id"], "instruction": r["instruction"], "output": r["output"]}) + "\n"
            for r in reference
        )
    )
    return [
        "--responses",
        str(responses),
        "--prompts",
        str(prompts),
        "--models",
        "m0",
        "m1",
        "--indomain",
        str(indomain),
        "--indomain-responses",
        str(folder / "indomain"),
        "--judge-base",
        str(judge_dir),
        "--annotations",
        "annotations.json",
        "--metrics",
        "metrics/evaluate.json",
        "--plot",
        "metrics/wr.png",
        "--plot-data",
        "metrics/wr.csv",
        "--params",
        str(folder / "params.yaml"),
    ]


def test_evaluate_stage_with_local_judge(tmp_path, monkeypatch, tiny_tokenizer):
    """The stage end to end: files in, metrics/annotations/plot out; the judge engine is faked."""
    from humpback.evaluation import judges
    from stages.evaluate import main

    engine = FakeJudgeEngine(tiny_tokenizer)
    monkeypatch.setattr(judges.LocalJudge, "engine", property(lambda self: engine))
    monkeypatch.chdir(tmp_path)
    # this test fakes the pairwise engine
    args = evaluate_stage_inputs(tmp_path, lambda raw: raw["evaluate"].update(judge_read="pairwise"))
    assert main(args) == 0
    metrics = read_json(tmp_path / "metrics/evaluate.json")
    assert set(metrics["models"]) == {"m0", "m1"}
    assert set(metrics["head_to_head"]) == {"m1_vs_m0"} and metrics["head_to_head"]["m1_vs_m0"]["n"] == 5
    assert set(metrics["indomain"]["models"]) == {"m0", "m1"} and metrics["indomain"]["models"]["m0"]["n"] == 5
    assert metrics["indomain"]["head_to_head"]["m1_vs_m0"]["n"] == 5
    for m in metrics["models"].values():
        assert set(m) >= {
            "win_rate",
            "standard_error",
            "n",
            "avg_length",
            "order_agreement",
            "position_bias",
            "unparsed",
            "length_controlled",
        }
        assert m["discrete_win_rate"] == pytest.approx(100 * 2 / 5)  # 2 of 5 model answers are longer
        assert m["win_rate"] == pytest.approx(100 * 2 / 5, abs=5)  # weighted by P(m) / (P(m) + P(M)) = 0.95
    assert metrics["judge"]["kind"] == "local"
    assert len(read_json(tmp_path / "annotations.json")) == 2 * 2 * 5 * 2  # vs the reference, vs the human answers
    assert (tmp_path / "metrics/wr.png").read_bytes()[:4] == b"\x89PNG"
    plotted = (tmp_path / "metrics/wr.csv").read_text().splitlines()
    assert plotted[0] == "model,win_rate,standard_error" and [r.split(",")[0] for r in plotted[1:]] == ["m0", "m1"]
    # identical m0/m1 outputs are judged once; the prompts carry the judge model's chat template
    assert len(engine.prompts) == 2 * 5
    assert all(p.rstrip().endswith("assistant") for p in engine.prompts)
    assert list((tmp_path / ".humpback/cache/judge").glob("local-*/annotations.json"))
    # a rerun is answered from the cache
    engine.prompts.clear()
    assert main(args) == 0 and engine.prompts == []


def test_report_renders_every_table(tmp_path):
    from stages.report import main
    from tests.conftest import report_args, write_dag_metrics

    metrics = tmp_path / "metrics"
    write_dag_metrics(metrics, curators=())
    write_json(
        metrics / "evaluate.json",
        {
            "reference": "base",
            "judge": {"kind": "local", "model": "models/base", "annotator": "alpaca_eval"},
            "length_controlled_reason": None,
            "head_to_head": {"m2_vs_m0": {"difference": 12.5, "ci_low": -6.0, "ci_high": 31.0, "n": 16}},
            "indomain": {},
            "models": {
                "m1": {
                    "win_rate": 55.0,
                    "standard_error": 4.0,
                    "n": 16,
                    "avg_length": 300.0,
                    "order_agreement": 0.5,
                    "position_bias": True,
                    "unparsed": 0,
                }
            },
        },
    )
    write_json(
        metrics / "curation_quality" / "m0.json",
        {
            "model": "m0",
            "precision": 0.5,
            "recall": None,
            "roc_auc": 0.7,
            "length_roc_auc": 0.6,
            "n_selected": 0,
            "n": 70,
            "method": "pmi",
            "methods": {"pmi": {"roc_auc": 0.7, "roc_auc_ci": [0.6, 0.8], "precision": 0.5, "recall": None}},
        },
    )
    write_json(metrics / "prepare_web.json", {"read": 10, "kept": 4, "dropped": {"too_short": 6, "duplicate": 0}})
    write_json(
        metrics / "train" / "m0.json",
        {
            "examples": 9,
            "examples_seed": 9,
            "examples_augmented": 0,
            "steps": 2,
            "final_loss": 2.5,
            "trained_tokens": 100,
            "seconds": 3.0,
        },
    )

    # M2 finds every other-source answer 0.05 nats/token likelier than M0 (a clear yes); on the seed's own
    # answers M1 is up on one question and down on another (cannot tell).
    def likelihood(name: str, other: list[float], seed: list[float]) -> str:
        def instrument(values):
            return {
                "n": len(values),
                "mean": sum(values) / len(values),
                "items": [{"id": f"q{i}", "logprob": v} for i, v in enumerate(values)],
            }

        path = tmp_path / "likelihood" / f"{name}.json"
        write_json(
            path, {"model": name, "instruments": {"loglik_other": instrument(other), "loglik_seed": instrument(seed)}}
        )
        return str(path)

    files = [
        likelihood("m0", [-2.0, -2.5, -3.0, -1.5], [-2.0, -2.0]),
        likelihood("m1", [-2.0, -2.5, -3.0, -1.5], [-1.9, -2.1]),
        likelihood("m2", [-1.95, -2.45, -2.95, -1.45], [-2.0, -2.0]),
    ]
    assert main(report_args(tmp_path, metrics, likelihood=files)) == 0
    text = (tmp_path / "report.md").read_text()
    assert text.index("## The answers") < text.index("## Data")
    assert "Does M2 beat M0 on other-source human answers (a source the pipeline never reads)? **yes**" in text
    assert "Does M1 beat M0 on held-out seed answers (the seed's own source)? **cannot tell**" in text
    assert (
        "Does M2 beat M0 on held-out in-domain questions (or the evaluation prompts), judged head to head? "
        "**cannot tell**"
    ) in text
    assert "| m1 | 55.0 | 4.0 | 16 |" in text and "| yes |" in text
    assert "| m0 | 0.50 | n/a | 0.70 |" in text
    assert "| prepare_web | 10 | 4 | too_short 6 |" in text
    assert "| m0 | 9 (9 + 0) | 2 | 2.500 | 100 | 3 |" in text
    headline = read_json(tmp_path / "headline.json")
    assert headline["win_rate"] == {"m1": 55.0}
    assert headline["curator_roc_auc"] == {"m0": 0.7}
    compared = read_json(tmp_path / "comparisons.json")
    m2 = compared["m2_vs_m0"]["loglik_other"]
    assert m2["difference"] == pytest.approx(0.05) and m2["ci_low"] == pytest.approx(0.05) and m2["n"] == 4
    assert headline["comparisons"]["m2_vs_m0"]["loglik_other"] == {
        k: m2[k] for k in ("difference", "ci_low", "ci_high")
    }
    assert headline["likelihood"]["m1"] == {"loglik_other": -2.25, "loglik_seed": -2.0}
    assert compared["m2_vs_m0"]["judged"]["n"] == 16 and "n" not in headline["comparisons"]["m2_vs_m0"]["judged"]
    assert (tmp_path / "cq.csv").read_text().splitlines() == [
        "curator,method,curator_method,precision,recall,roc_auc",
        "m0,pmi,m0/pmi,0.5,,0.7",
    ]


class _JudgeServer:
    """A minimal OpenAI-compatible chat endpoint with logprobs, on localhost: prefers the longer answer."""

    def __init__(self):
        import http.server
        import json
        import threading

        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                requests.append(body)
                outs = _outputs_in(body["messages"][-1]["content"])
                first = len(outs["m"]) > len(outs["M"])
                top = [
                    {"token": "m", "logprob": -0.05 if first else -4.0, "bytes": [109]},
                    {"token": "M", "logprob": -4.0 if first else -0.05, "bytes": [77]},
                ]
                answer = "m" if first else "M"
                reply = {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "length",
                            "message": {"role": "assistant", "content": answer},
                            "logprobs": {
                                "content": [
                                    {"token": answer, "logprob": -0.05, "bytes": [ord(answer)], "top_logprobs": top}
                                ]
                            },
                        }
                    ],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101},
                }
                data = json.dumps(reply).encode()
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


def test_openai_compatible_judge_through_alpaca_eval_decoder(tmp_path, monkeypatch):
    """evaluate.engine=openai at a server (runtime.evaluate_base_url), read pairwise: alpaca_eval's own OpenAI
    decoder, pointed at the server by client config, asking for evaluate.api_model; generation stays in-process."""
    from humpback.engines.factory import resolve_engine, stage_settings
    from humpback.evaluation.judges import make_judge
    from humpback.params import load_params

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = _JudgeServer()
    try:
        shipped = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
        params = dataclasses.replace(
            shipped,
            evaluate=dataclasses.replace(
                shipped.evaluate, engine="openai", api_model="Judge-7B-Instruct", judge_read="pairwise"
            ),
            runtime=dataclasses.replace(shipped.runtime, evaluate_base_url=server.url),
        )
        respond = stage_settings(params, "respond").generation.engine
        assert respond == resolve_engine(shipped.generation.engine)  # the other stages keep generation.engine
        judge_engine = stage_settings(params, "evaluate")
        annotator, judge = make_judge(params.evaluate, judge_engine, tmp_path / "unused", cache_root=tmp_path / "cache")
        reference, model = _data(4)
        models, _ = evaluate_models(annotator, {"m1": model}, reference, max_chars=1000)
    finally:
        server.close()
    assert judge["kind"] == "openai-compatible" and judge["id"].startswith("oaic-")
    longer = sum(len(m["output"]) > len(r["output"]) for m, r in zip(model, reference)) / len(model)
    assert models["m1"]["discrete_win_rate"] == pytest.approx(100 * longer)
    assert models["m1"]["unparsed"] == 0 and models["m1"]["order_agreement"] == 1.0
    request = server.requests[0]
    assert request["model"] == "Judge-7B-Instruct"  # sent as a chat model despite "Instruct" in the name
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert request["logprobs"] is True and request["max_tokens"] == 1
    assert len(server.requests) == 2 * len(model)


def test_judges_that_need_settings_say_so(tmp_path, monkeypatch):
    from humpback.engines.factory import stage_settings
    from humpback.evaluation.judges import JudgeError, make_judge
    from humpback.params import EvaluateParams, load_params

    shipped = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    served = dataclasses.replace(shipped.runtime, evaluate_base_url="http://x/v1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    scoring = shipped.evaluate.judge_scoring
    cases = [  # OpenAI's API (no server URL) needs a key; a server needs the served model's name
        (EvaluateParams("base", "base", 100, "pairwise", scoring, engine="openai"), shipped.runtime, "OPENAI_API_KEY"),
        (EvaluateParams("base", "base", 100, "pairwise", scoring, engine="openai"), served, "evaluate.api_model"),
        (EvaluateParams("base", "base", 100, "pairwise", scoring, engine="transformers"), shipped.runtime, "not found"),
    ]
    for settings, runtime, message in cases:
        params = dataclasses.replace(shipped, evaluate=settings, runtime=runtime)
        judge_engine = stage_settings(params, "evaluate")
        with pytest.raises(JudgeError, match=message):
            make_judge(settings, judge_engine, tmp_path / "no-such-model", cache_root=tmp_path / "cache")


def test_local_judge_on_tiny_model(tmp_path, tiny_model_dir):
    """The real local path offline: transformers engine, judge chat template, one forward pass per judgement."""
    from humpback.engines.factory import engine_settings
    from humpback.evaluation.judges import make_judge
    from humpback.params import load_params

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    settings = dataclasses.replace(params.evaluate, judge_read="pairwise")
    judge_engine = engine_settings(params.generation, params.runtime)
    annotator, judge = make_judge(settings, judge_engine, tiny_model_dir, cache_root=tmp_path)
    reference, model = _data(3)
    models, annotations = evaluate_models(annotator, {"m1": model}, reference, max_chars=200)
    m1 = models["m1"]
    assert judge["kind"] == "local" and m1["n"] == 3 and m1["unparsed"] == 0
    assert 0 <= m1["win_rate"] <= 100 and m1["order_agreement"] is not None
    for a in annotations:
        top = a["preference_raw_completion"]["logprobs"]["content"][0]["top_logprobs"]
        assert {t["token"] for t in top} == {"m", "M"}
        assert 1.0 <= a["preference"] <= 2.0


def test_score_preference_is_the_higher_score():
    from humpback.evaluation.judges import score_preference

    assert score_preference(2.0, 1.0) == 1.0  # alpaca_eval: 1 = output_1 preferred
    assert score_preference(-3.0, 0.5) == 2.0
    assert score_preference(0.5, 0.5) == 1.5
    assert score_preference(None, 0.5) is None and score_preference(0.5, None) is None


def _score_settings(read: str):
    from humpback.params import load_params

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    return params, dataclasses.replace(params.evaluate, judge_read=read)


def test_score_judge_length_read_is_position_free_and_cached(tmp_path, monkeypatch):
    """judge_read=length needs no model: the longer answer wins in both orders, scores are cached per answer."""
    import humpback.curation.scoring
    from humpback.engines.factory import engine_settings
    from humpback.evaluation.judges import make_judge

    params, settings = _score_settings("length")
    judge_engine = engine_settings(params.generation, params.runtime)
    judge, info = make_judge(settings, judge_engine, tmp_path / "unused", cache_root=tmp_path / "cache")
    reference, model = _data(6)
    models, annotations = evaluate_models(judge, {"m1": model}, reference, max_chars=1000)
    longer = sum(len(m["output"]) > len(r["output"]) for m, r in zip(model, reference)) / len(model)
    assert info["read"] == "length" and info["id"].startswith("score-length-")
    assert models["m1"]["win_rate"] == pytest.approx(100 * longer)
    assert models["m1"]["order_agreement"] == 1.0 and models["m1"]["position_bias"] is False
    assert all(a["preference"] in (1.0, 2.0) for a in annotations)

    # A second judge with the same identity answers from the cache file: nothing is scored again.
    monkeypatch.setattr(humpback.curation.scoring, "score_pairs", lambda *a, **k: pytest.fail("scored a cached answer"))
    again, _ = make_judge(settings, judge_engine, tmp_path / "unused", cache_root=tmp_path / "cache")
    models_again, _ = evaluate_models(again, {"m1": model}, reference, max_chars=1000)
    assert models_again["m1"]["win_rate"] == models["m1"]["win_rate"]


def test_score_judge_on_tiny_model_mirrors_under_swap(tmp_path, tiny_model_dir):
    """judge_read=pmi on a real (tiny) model: each answer scored once; swapping the answers mirrors the verdict."""
    from humpback.engines.factory import engine_settings
    from humpback.evaluation.judges import make_judge

    params, settings = _score_settings("pmi")
    judge_engine = engine_settings(params.generation, params.runtime)
    judge, info = make_judge(settings, judge_engine, tiny_model_dir, cache_root=tmp_path)
    reference, model = _data(3)
    models, annotations = evaluate_models(judge, {"m1": model}, reference, max_chars=200)
    assert info["read"] == "pmi" and models["m1"]["n"] == 3 and models["m1"]["unparsed"] == 0
    by_pair = {}
    for a in annotations:
        assert math.isfinite(a["score_1"]) and math.isfinite(a["score_2"])
        by_pair.setdefault(a["pair"], {})[a["order"]] = a["preference"]
    for prefs in by_pair.values():
        assert prefs["reference_first"] == 3.0 - prefs["model_first"]
    assert len(judge.cache) == 6  # 3 model answers + 3 reference answers, each scored once


class FakeScoringEngine:
    """Stands in for a method-read judge's engine (pmi reads completion log-probabilities): records every text it
    reads; a text's values follow its length."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.texts: list[str] = []

    def completion_logprobs(self, prompts, completions, *, desc=""):
        self.texts += [p + c for p, c in zip(prompts, completions)]
        return [[-0.001 * len(p)] * (1 + len(c) // 8) for p, c in zip(prompts, completions)]


def conditions_under_test(raw: dict) -> None:
    """Every key a sweep varies to compare the models (how they are curated and trained), changed."""
    raw["train"].update(tagging=not raw["train"]["tagging"], mix="augmented")
    raw["curate"].update(
        model="another/curator",
        method="logprob",
        max_new_tokens=7,
        max_retries=0,
        max_pair_chars=60,
        engine="openai",
        api_model="served",
    )
    raw["curate"]["threshold"] = {method: value + 1 for method, value in raw["curate"]["threshold"].items()}


def test_the_judge_is_fixed_across_the_conditions_under_test(tmp_path, monkeypatch, tiny_tokenizer):
    """The judge is an instrument: with a method read (pmi) the evaluate stage reads exactly the same texts and
    writes the same metrics and annotations whatever train.tagging, train.mix and curate.* say, and reads none of
    those keys; its own settings (evaluate.judge_scoring) do reach its prompts."""
    from humpback.evaluation import judges
    from humpback.stage_runner import READS_ENV
    from humpback.storage.workdirs import CACHE_ENV
    from stages.evaluate import main

    engine = FakeScoringEngine(tiny_tokenizer)
    monkeypatch.setattr(judges.ScoreJudge, "engine", property(lambda self: engine))
    monkeypatch.setenv(READS_ENV, str(tmp_path / "reads.jsonl"))
    judge_dir = tmp_path / "judge"
    judge_dir.mkdir()
    (judge_dir / "config.json").write_text("{}")

    def judged(name: str, edit: Callable[[dict], None]) -> tuple[list[str], dict, list]:
        folder = tmp_path / name
        folder.mkdir()
        args = evaluate_stage_inputs(
            folder, lambda raw: (raw["evaluate"].update(judge_read="pmi"), edit(raw)), judge_dir
        )
        monkeypatch.chdir(folder)
        monkeypatch.setenv(CACHE_ENV, str(folder / "cache"))  # a judge cache of its own: every answer is scored
        engine.texts = []
        assert main(args) == 0
        return engine.texts, read_json(folder / "metrics/evaluate.json"), read_json(folder / "annotations.json")

    shipped = judged("shipped", lambda raw: None)
    assert shipped[0] and shipped[1]["judge"]["read"] == "pmi"
    assert judged("conditions", conditions_under_test) == shipped
    reads = {k for line in (tmp_path / "reads.jsonl").read_text().splitlines() for k in json.loads(line)["keys"]}
    assert "evaluate.judge_scoring.system_prompt" in reads
    assert not {k for k in reads if k.startswith(("curate.", "train."))}
    own = judged("own", lambda raw: raw["evaluate"]["judge_scoring"].update(system_prompt="none"))
    assert own[0] != shipped[0] and own[1]["judge"]["id"] != shipped[1]["judge"]["id"]
