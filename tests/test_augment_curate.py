"""The augment and curate stages: filters and counts, a SIGKILLed augment resumed to the same bytes, and
curate's outputs, selection and metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import humpback.generation
from humpback.params import AugmentParams
from humpback.records import read_jsonl
from stages import augment, curate

ROOT = Path(__file__).resolve().parents[1]
FILTERS = ["empty", "echo", "too_long", "not_instruction"]
AUG = AugmentParams(max_new_tokens=64, max_instruction_chars=400, echo_overlap=0.8, filters=FILTERS)
SEGMENT = ("Decorators wrap a function to extend its behaviour. The syntax @decorator above a def is "
           "shorthand for func = decorator(func). Common uses are logging, caching and access control.")


# ----------------------------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    "instruction, reason",
    [
        ("What does the @ syntax above a function definition do in Python?", None),
        ("Explain Python decorators and give common uses.", None),
        ("", "empty"),
        ("Decorators wrap a function to extend its behaviour.", "echo"),  # a prefix of the segment
        ("The syntax @decorator above a def is shorthand for func = decorator(func).", "echo"),  # copied
        ("Why? " * 100, "too_long"),
        ("@decorator\ndef f(): pass", "not_instruction"),  # code
        ("{}[]()=+-*/ 1234 %$#", "not_instruction"),
        ("1234 5678", "not_instruction"),
        ("How do I write a decorator that takes", "not_instruction"),  # cut mid-sentence
    ],
)
def test_drop_reason(instruction, reason):
    assert augment.drop_reason(instruction, SEGMENT, AUG) == reason


def test_only_the_listed_filters_apply_but_empty_always_does():
    import dataclasses

    none = dataclasses.replace(AUG, filters=[])
    assert augment.drop_reason("import os", SEGMENT, none) is None
    assert augment.drop_reason("Decorators wrap a function to extend its behaviour.", SEGMENT, none) is None
    assert augment.drop_reason("", SEGMENT, none) == "empty"
    echo_only = dataclasses.replace(AUG, filters=["echo"])
    assert augment.drop_reason("Decorators wrap a function to extend its behaviour.", SEGMENT, echo_only) == "echo"


class FakeEngine:
    def __init__(self, texts: list[str]):
        from transformers import AutoTokenizer

        self.texts = texts
        self.tokenizer = AutoTokenizer.from_pretrained(FakeEngine.model_dir)
        self.prompts: list[str] = []

    def generate(self, prompts, max_new_tokens, seeds, *, temperature=None, top_p=None, desc=""):
        self.prompts += prompts
        return [self.texts[len(self.prompts) - len(prompts) + i] for i in range(len(prompts))]


def write_inputs(folder: Path, n: int, shard_size: int = 2, max_new_tokens: int = 6,
                 filters: list[str] = FILTERS) -> tuple[Path, Path]:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["augment"].update(shard_size=shard_size, max_new_tokens=max_new_tokens, filters=filters)
    params["curate"].update(shard_size=shard_size, method="logprob")
    params["curate"]["threshold"]["logprob"] = 3.0
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    web = folder / "web.jsonl"
    web.write_text("".join(json.dumps({"id": f"seg-{i}", "text": f"Segment {i}. " + SEGMENT, "header": "h",
                                       "doc": "d.html"}) + "\n" for i in range(n)))
    return folder / "params.yaml", web


def run_augment_in_process(tmp_path, monkeypatch, tiny_model_dir, texts):
    FakeEngine.model_dir = tiny_model_dir
    engine = FakeEngine(texts)
    monkeypatch.setattr(humpback.generation, "make_engine", lambda *a, **k: engine)
    monkeypatch.chdir(tmp_path)
    params, web = write_inputs(tmp_path, len(texts))
    code = augment.main(["--model", str(tiny_model_dir), "--web", str(web), "--out", "aug.jsonl",
                         "--metrics", "m.json", "--params", str(params)])
    return code, engine


def test_augment_counts_every_segment(tmp_path, monkeypatch, tiny_model_dir):
    texts = ["What are decorators for?", "", "Segment 2. Decorators wrap a function", "x" * 500 + "?",
             "import os", "  How do I cache a function's results?  "]
    code, engine = run_augment_in_process(tmp_path, monkeypatch, tiny_model_dir, texts)
    assert code == 0
    rows = read_jsonl(tmp_path / "aug.jsonl")
    assert [r["instruction"] for r in rows] == ["What are decorators for?",
                                                "How do I cache a function's results?"]
    assert rows[0] == {"id": "aug-seg-0", "segment_id": "seg-0", "instruction": "What are decorators for?",
                       "output": "Segment 0. " + SEGMENT}
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["read"] == 6 and metrics["kept"] == 2
    assert metrics["dropped"] == {"empty": 1, "echo": 1, "too_long": 1, "not_instruction": 1}
    assert metrics["read"] == metrics["kept"] + sum(metrics["dropped"].values())
    # The backward model's prompt: its training prefix, no system prompt.
    from humpback.prompts import backward_instruction, format_example

    user = backward_instruction("Segment 0. " + SEGMENT)
    assert engine.prompts[0] == format_example(engine.tokenizer, user=user).prompt
    assert not (tmp_path / ".humpback" / "scratch").exists()  # scratch dropped after success


def test_augment_refuses_an_empty_result(tmp_path, monkeypatch, tiny_model_dir, capsys):
    code, _ = run_augment_in_process(tmp_path, monkeypatch, tiny_model_dir, ["", "import os"])
    assert code == 1
    assert "no instruction survived" in capsys.readouterr().err
    assert not (tmp_path / "aug.jsonl").exists()


# --------------------------------------------------------------------------------------------- kill + resume

DRIVER = """
import os, sys, time
import humpback.generation as generation
from stages import augment

delay = float(os.environ["DELAY_S"])
make_engine = generation.make_engine

def slow_engine(*args, **kwargs):
    engine = make_engine(*args, **kwargs)
    generate = engine.generate
    def counted(prompts, *a, **k):
        out = generate(prompts, *a, **k)
        print("generated a shard", file=sys.stderr, flush=True)
        time.sleep(delay)  # a window to kill the run between shards
        return out
    engine.generate = counted
    return engine

generation.make_engine = slow_engine
sys.exit(augment.main(sys.argv[1:]))
"""


def augment_cmd(folder: Path, model: Path) -> list[str]:
    return [sys.executable, str(folder / "driver.py"), "--model", str(model), "--web", "web.jsonl",
            "--out", "augmented.jsonl", "--metrics", "augment.json", "--params", "params.yaml"]


def augment_env(delay: float) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "DELAY_S": str(delay), "OMP_NUM_THREADS": "1"}


def test_sigkilled_augment_resumes_to_identical_output(tmp_path, tiny_model_dir, monkeypatch):
    import torch

    n, shard_size = 10, 2
    folder = tmp_path / "killed"
    folder.mkdir()
    # A random tiny model writes no sentences: keep its text (only empty instructions are dropped).
    write_inputs(folder, n, shard_size=shard_size, filters=[])
    (folder / "driver.py").write_text(DRIVER)
    proc = subprocess.Popen(augment_cmd(folder, tiny_model_dir), cwd=folder, env=augment_env(1.0),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # Meanwhile, the uninterrupted run, in this process (same thread count as the subprocesses).
    whole = tmp_path / "whole"
    whole.mkdir()
    write_inputs(whole, n, shard_size=shard_size, filters=[])
    monkeypatch.chdir(whole)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert augment.main(augment_cmd(whole, tiny_model_dir)[2:]) == 0
    finally:
        torch.set_num_threads(threads)

    deadline = time.monotonic() + 120
    while not list(folder.glob(".humpback/scratch/augment-*/shard-00000.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, "augment ended before its first shard"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done = len(list(folder.glob(".humpback/scratch/augment-*/shard-*.jsonl")))
    assert 1 <= done < n // shard_size
    assert not (folder / "augmented.jsonl").exists()

    resumed = subprocess.run(augment_cmd(folder, tiny_model_dir), cwd=folder, env=augment_env(0), check=False,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("generated a shard") == n // shard_size - done  # finished shards not redone
    assert (folder / "augmented.jsonl").read_bytes() == (whole / "augmented.jsonl").read_bytes()
    assert len(read_jsonl(folder / "augmented.jsonl")) == n
    assert not list(folder.glob(".humpback/scratch/augment-*"))


# -------------------------------------------------------------------------------------------------- curate


def curate_args(folder: Path, model: Path, params: Path) -> list[str]:
    return ["--iteration", "1", "--model", str(model), "--pairs", str(folder / "pairs.jsonl"),
            "--scored", str(folder / "scored.jsonl"), "--selected", str(folder / "selected.jsonl"),
            "--metrics", str(folder / "curate.json"), "--plot", str(folder / "hist.png"),
            "--plot-data", str(folder / "hist.csv"), "--params", str(params)]


def write_pairs(folder: Path, n: int) -> None:
    rows = [{"id": f"aug-seg-{i}", "segment_id": f"seg-{i}", "instruction": f"Question {i}?",
             "output": ("Score: 5\n" if i % 2 else "") + SEGMENT} for i in range(n)]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_curate_logprob_on_tiny_model(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    params, _ = write_inputs(tmp_path, 0)
    write_pairs(tmp_path, 6)
    assert curate.main(curate_args(tmp_path, tiny_model_dir, params)) == 0
    scored = read_jsonl(tmp_path / "scored.jsonl")
    assert [r["id"] for r in scored] == [f"aug-seg-{i}" for i in range(6)]
    for row in scored:
        assert row["parsed"] and row["raw"] is None and len(row["probs"]) == 5
        assert row["score_argmax"] == 1 + row["probs"].index(max(row["probs"]))
        assert row["selected"] == (row["score"] >= 3.0)
    assert read_jsonl(tmp_path / "selected.jsonl") == [r for r in scored if r["selected"]]
    metrics = json.loads((tmp_path / "curate.json").read_text())
    assert metrics["n"] == 6 and sum(metrics["histogram"].values()) == 6
    assert metrics["parse_failure_rate"] == 0
    assert metrics["selected"] == sum(r["selected"] for r in scored)
    assert (tmp_path / "hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plotted = (tmp_path / "hist.csv").read_text().splitlines()
    assert plotted == ["score,pairs"] + [f"{k},{metrics['histogram'][str(k)]}" for k in range(1, 6)]
    assert not (tmp_path / ".humpback" / "scratch").exists()


def test_curate_generate_mode_counts_parse_failures(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    params_path, _ = write_inputs(tmp_path, 0)
    params = yaml.safe_load(params_path.read_text())
    params["curate"].update(method="generate", max_retries=1)
    params["curate"]["threshold"]["generate"] = 4.0
    params_path.write_text(yaml.safe_dump(params))
    write_pairs(tmp_path, 4)
    # Replies per call, in order: pairs 0-3, then the retry of the two failures (1 and 3).
    FakeEngine.model_dir = tiny_model_dir
    replies = ["Good.\nScore: 5", "Score: 10", "Meh.\nScore: 3", "no score", "Score: 4", "still none"]
    engine = FakeEngine(replies)
    monkeypatch.setattr(humpback.generation, "make_engine", lambda *a, **k: engine)
    assert curate.main(curate_args(tmp_path, tiny_model_dir, params_path)) == 0
    scored = read_jsonl(tmp_path / "scored.jsonl")
    assert [r["score"] for r in scored] == [5.0, 4.0, 3.0, None]
    assert [r["selected"] for r in scored] == [True, True, False, False]
    metrics = json.loads((tmp_path / "curate.json").read_text())
    assert metrics["histogram"] == {"1": 0, "2": 0, "3": 1, "4": 1, "5": 1}
    assert metrics["parse_failure_rate"] == 0.25 and metrics["selected"] == 2
    assert metrics["lengths_selected"]["instruction_chars"] == len("Question 0?")


def test_curate_likelihood_gain_with_a_named_curator(tmp_path, monkeypatch, tiny_model_dir):
    """curate.model names a model: the prepared folder curates (without the project's tags), selection at the
    method's own threshold, and the histogram plot shows the continuous score."""
    monkeypatch.chdir(tmp_path)
    params_path, _ = write_inputs(tmp_path, 0)
    params = yaml.safe_load(params_path.read_text())
    params["curate"].update(model=str(tiny_model_dir), method="likelihood_gain")
    params["curate"]["threshold"]["likelihood_gain"] = -100.0  # a random model: keep everything parsed
    params_path.write_text(yaml.safe_dump(params))
    write_pairs(tmp_path, 3)
    seen = {}
    real = humpback.generation.make_engine

    def make_engine(model_dir, gen_params):
        seen["model"] = str(model_dir)
        return real(model_dir, gen_params)

    monkeypatch.setattr(humpback.generation, "make_engine", make_engine)
    args = curate_args(tmp_path, tmp_path / "no-such-m0", params_path)
    assert curate.main(args) == 1  # a named curator needs its prepared folder
    assert curate.main(args + ["--named-curator", str(tiny_model_dir)]) == 0
    assert seen["model"] == str(tiny_model_dir)
    scored = read_jsonl(tmp_path / "scored.jsonl")
    assert all(r["parsed"] and r["selected"] and r["probs"] is None for r in scored)
    metrics = json.loads((tmp_path / "curate.json").read_text())
    assert metrics["curator"] == str(tiny_model_dir) and metrics["threshold"] == -100.0
    assert (tmp_path / "hist.png").read_bytes()[:4] == b"\x89PNG"


def test_histogram_rows_bin_continuous_scores_and_keep_every_pair():
    scored = [{"score": float(v), "parsed": True} for v in (0, 1, 2, 9, 10)] + [{"score": None, "parsed": False}]
    rows = curate.histogram_rows(scored, {"method": "pmi"}, bins=5)
    assert [r[0] for r in rows] == ["0", "2", "4", "6", "8"]
    assert [r[1] for r in rows] == [2, 1, 0, 0, 2] and sum(r[1] for r in rows) == 5
    digits = curate.histogram_rows(scored, {"method": "logprob", "histogram": {str(k): k for k in range(1, 6)}})
    assert digits == [(str(k), k) for k in range(1, 6)]


def test_curate_metrics_histogram_bins_a_continuous_method():
    """pmi has no digits: metrics["histogram"] holds its binned scores (every parsed pair counted), not zeros."""
    from types import SimpleNamespace

    scored = [{"score": float(v), "score_argmax": None, "parsed": True, "selected": v >= 5,
               "instruction": "q", "output": "a"} for v in range(10)]
    curate_params = SimpleNamespace(model="self", method="pmi", threshold_for=lambda: 5.0)
    metrics = curate.curate_metrics(scored, SimpleNamespace(curate=curate_params), seconds=1.0)
    assert sum(metrics["histogram"].values()) == 10 and len(metrics["histogram"]) == 20
    assert curate.histogram_rows(scored, metrics) == list(metrics["histogram"].items())
