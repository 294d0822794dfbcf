"""The augment, score and select stages: filters and counts, a SIGKILLed augment resumed to the same bytes,
scoring's outputs, and selection by threshold and cap (which never re-scores)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import humpback.engines.factory
from humpback import augmentation
from humpback.curation.selection import histogram, overlap, select, top_share_of
from humpback.params import AugmentParams, load_params
from humpback.storage.records import read_jsonl
from stages import augment
from stages import score as score_stage
from stages import select as select_stage
from tests.conftest import score_args

ROOT = Path(__file__).resolve().parents[2]
FILTERS = ["empty", "echo", "too_long", "not_instruction"]
AUG = AugmentParams(max_new_tokens=64, max_instruction_chars=400, echo_overlap=0.8, filters=FILTERS)
SEGMENT = (
    "Decorators wrap a function to extend its behaviour. The syntax @decorator above a def is "
    "shorthand for func = decorator(func). Common uses are logging, caching and access control."
)


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
    assert augmentation.drop_reason(instruction, SEGMENT, AUG) == reason


def test_only_the_listed_filters_apply_but_empty_always_does():
    import dataclasses

    none = dataclasses.replace(AUG, filters=[])
    assert augmentation.drop_reason("import os", SEGMENT, none) is None
    assert augmentation.drop_reason("Decorators wrap a function to extend its behaviour.", SEGMENT, none) is None
    assert augmentation.drop_reason("", SEGMENT, none) == "empty"
    echo_only = dataclasses.replace(AUG, filters=["echo"])
    assert augmentation.drop_reason("Decorators wrap a function to extend its behaviour.", SEGMENT, echo_only) == "echo"


class FakeEngine:
    def __init__(self, texts: list[str]):
        from transformers import AutoTokenizer

        self.texts = texts
        self.tokenizer = AutoTokenizer.from_pretrained(FakeEngine.model_dir)
        self.prompts: list[str] = []

    def generate(self, prompts, max_new_tokens, seeds, *, sampling=None, desc=""):
        self.prompts += prompts
        return [self.texts[len(self.prompts) - len(prompts) + i] for i in range(len(prompts))]


def write_inputs(
    folder: Path, n: int, shard_size: int = 2, max_new_tokens: int = 6, filters: list[str] = FILTERS
) -> tuple[Path, Path]:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["augment"].update(max_new_tokens=max_new_tokens, filters=filters)
    params["runtime"].update(augment_shard_size=shard_size, score_shard_size=shard_size)
    params["curate"].update(method="logprob")
    params["curate"]["threshold"]["logprob"] = 3.0
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    web = folder / "web.jsonl"
    web.write_text(
        "".join(
            json.dumps({"id": f"seg-{i}", "text": f"Segment {i}. " + SEGMENT, "header": "h", "doc": "d.html"}) + "\n"
            for i in range(n)
        )
    )
    return folder / "params.yaml", web


def run_augment_in_process(tmp_path, monkeypatch, tiny_model_dir, texts):
    FakeEngine.model_dir = tiny_model_dir
    engine = FakeEngine(texts)
    monkeypatch.setattr(humpback.engines.factory, "make_engine", lambda *a, **k: engine)
    monkeypatch.chdir(tmp_path)
    params, web = write_inputs(tmp_path, len(texts))
    code = augment.main(
        [
            "--model",
            str(tiny_model_dir),
            "--web",
            str(web),
            "--out",
            "aug.jsonl",
            "--metrics",
            "m.json",
            "--params",
            str(params),
        ]
    )
    return code, engine


def test_augment_counts_every_segment(tmp_path, monkeypatch, tiny_model_dir):
    texts = [
        "What are decorators for?",
        "",
        "Segment 2. Decorators wrap a function",
        "x" * 500 + "?",
        "import os",
        "  How do I cache a function's results?  ",
    ]
    code, engine = run_augment_in_process(tmp_path, monkeypatch, tiny_model_dir, texts)
    assert code == 0
    rows = read_jsonl(tmp_path / "aug.jsonl")
    assert [r["instruction"] for r in rows] == ["What are decorators for?", "How do I cache a function's results?"]
    assert rows[0] == {
        "id": "aug-seg-0",
        "segment_id": "seg-0",
        "instruction": "What are decorators for?",
        "output": "Segment 0. " + SEGMENT,
    }
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
import humpback.engines.factory as generation
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
    return [
        sys.executable,
        str(folder / "driver.py"),
        "--model",
        str(model),
        "--web",
        "web.jsonl",
        "--out",
        "augmented.jsonl",
        "--metrics",
        "augment.json",
        "--params",
        "params.yaml",
    ]


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
    proc = subprocess.Popen(
        augment_cmd(folder, tiny_model_dir),
        cwd=folder,
        env=augment_env(1.0),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

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

    resumed = subprocess.run(
        augment_cmd(folder, tiny_model_dir),
        cwd=folder,
        env=augment_env(0),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("generated a shard") == n // shard_size - done  # finished shards not redone
    assert (folder / "augmented.jsonl").read_bytes() == (whole / "augmented.jsonl").read_bytes()
    assert len(read_jsonl(folder / "augmented.jsonl")) == n
    assert not list(folder.glob(".humpback/scratch/augment-*"))


# ------------------------------------------------------------------------------------------ score, select


def select_args(folder: Path, params: Path, iteration: int = 1) -> list[str]:
    return [
        "--iteration",
        str(iteration),
        "--scored",
        str(folder / "scored.jsonl"),
        "--out",
        str(folder / "selected.jsonl"),
        "--metrics",
        str(folder / "select.json"),
        "--plot",
        str(folder / "hist.png"),
        "--plot-data",
        str(folder / "hist.csv"),
        "--params",
        str(params),
    ]


def write_pairs(folder: Path, n: int) -> None:
    rows = [
        {
            "id": f"aug-seg-{i}",
            "segment_id": f"seg-{i}",
            "instruction": f"Question {i}?",
            "output": ("Score: 5\n" if i % 2 else "") + SEGMENT,
        }
        for i in range(n)
    ]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def edit_params(path: Path, **sections) -> None:
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        for key, value in values.items():
            node = params[section]
            *parents, leaf = key.split(".")
            for parent in parents:
                node = node[parent]
            node[leaf] = value
    path.write_text(yaml.safe_dump(params))


def test_score_then_select_logprob_on_tiny_model(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    params, _ = write_inputs(tmp_path, 0)
    write_pairs(tmp_path, 6)
    assert score_stage.main(score_args(tmp_path, tiny_model_dir, params)) == 0
    scored = read_jsonl(tmp_path / "scored.jsonl")
    assert [r["id"] for r in scored] == [f"aug-seg-{i}" for i in range(6)]
    for row in scored:
        assert row["parsed"] and row["raw"] is None and len(row["probs"]) == 5
        assert row["score_argmax"] == 1 + row["probs"].index(max(row["probs"]))
        assert "selected" not in row  # scoring selects nothing
    assert json.loads((tmp_path / "score.json").read_text())["parse_failure_rate"] == 0
    assert not (tmp_path / ".humpback" / "scratch").exists()

    # Selection at the median score: exactly the pairs at or above it, in input order.
    median = sorted(r["score"] for r in scored)[3]
    edit_params(params, select={"iteration_1.threshold": median})
    assert select_stage.main(select_args(tmp_path, params)) == 0
    selected = read_jsonl(tmp_path / "selected.jsonl")
    assert selected == [r for r in scored if r["score"] >= median] and len(selected) == 3
    metrics = json.loads((tmp_path / "select.json").read_text())
    assert metrics["n"] == 6 and sum(metrics["histogram"].values()) == 6
    assert metrics["selected"] == metrics["at_threshold"] == 3 and metrics["threshold"] == median
    assert (tmp_path / "hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plotted = (tmp_path / "hist.csv").read_text().splitlines()
    assert plotted == ["score,pairs"] + [f"{k},{metrics['histogram'][str(k)]}" for k in range(1, 6)]

    # A cap keeps the N best of those, still in input order; the scores file is untouched.
    before = (tmp_path / "scored.jsonl").read_bytes()
    edit_params(params, select={"iteration_1.cap": 2})
    assert select_stage.main(select_args(tmp_path, params)) == 0
    capped = read_jsonl(tmp_path / "selected.jsonl")
    best = sorted(selected, key=lambda r: -r["score"])[:2]
    assert capped == [r for r in selected if r in best]
    assert json.loads((tmp_path / "select.json").read_text())["at_threshold"] == 3
    assert (tmp_path / "scored.jsonl").read_bytes() == before


def test_score_generate_mode_counts_parse_failures(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    params_path, _ = write_inputs(tmp_path, 0)
    edit_params(
        params_path,
        curate={"method": "generate", "max_retries": 1, "threshold.generate": 4.0},
        runtime={"score_shard_size": 4},
    )
    write_pairs(tmp_path, 4)
    # Replies per call, in order: pairs 0-3, then the retry of the two failures (1 and 3).
    FakeEngine.model_dir = tiny_model_dir
    replies = ["Good.\nScore: 5", "Score: 10", "Meh.\nScore: 3", "no score", "Score: 4", "still none"]
    engine = FakeEngine(replies)
    monkeypatch.setattr(humpback.engines.factory, "make_engine", lambda *a, **k: engine)
    assert score_stage.main(score_args(tmp_path, tiny_model_dir, params_path)) == 0
    scored = read_jsonl(tmp_path / "scored.jsonl")
    assert [r["score"] for r in scored] == [5.0, 4.0, 3.0, None]
    assert json.loads((tmp_path / "score.json").read_text())["parse_failure_rate"] == 0.25
    assert select_stage.main(select_args(tmp_path, params_path)) == 0
    assert [r["id"] for r in read_jsonl(tmp_path / "selected.jsonl")] == ["aug-seg-0", "aug-seg-1"]
    metrics = json.loads((tmp_path / "select.json").read_text())
    assert metrics["histogram"] == {"1": 0, "2": 0, "3": 1, "4": 1, "5": 1} and metrics["selected"] == 2
    assert metrics["lengths_selected"]["instruction_chars"] == len("Question 0?")


def test_score_with_a_named_curator(tmp_path, monkeypatch, tiny_model_dir):
    """curate.model names a model: the prepared folder curates, without the project's tags."""
    monkeypatch.chdir(tmp_path)
    params_path, _ = write_inputs(tmp_path, 0)
    edit_params(params_path, curate={"model": str(tiny_model_dir), "method": "likelihood_gain"})
    write_pairs(tmp_path, 3)
    seen = {}
    real = humpback.engines.factory.make_engine

    def make_engine(model_dir, settings):
        seen["model"] = str(model_dir)
        return real(model_dir, settings)

    monkeypatch.setattr(humpback.engines.factory, "make_engine", make_engine)
    args = score_args(tmp_path, tmp_path / "no-such-m0", params_path, named=tiny_model_dir)
    assert score_stage.main(args) == 0
    assert seen["model"] == str(tiny_model_dir)
    scored = read_jsonl(tmp_path / "scored.jsonl")
    assert all(r["parsed"] and r["probs"] is None for r in scored)
    metrics = json.loads((tmp_path / "score.json").read_text())
    assert metrics["curator"] == str(tiny_model_dir) and metrics["tagged"] is False


def test_no_curation_keeps_every_pair_without_a_curator(tmp_path, monkeypatch, tiny_model_dir):
    """curate.method none: no engine is built, every pair passes, and a cap keeps a seeded sample."""
    monkeypatch.chdir(tmp_path)
    params_path, _ = write_inputs(tmp_path, 0)
    edit_params(params_path, curate={"method": "none"}, select={"iteration_1.top_share": 1.0})
    write_pairs(tmp_path, 8)

    def no_engine(*a, **k):
        raise AssertionError("curate.method none must not load a curator")

    monkeypatch.setattr(humpback.engines.factory, "make_engine", no_engine)
    assert score_stage.main(score_args(tmp_path, tiny_model_dir, params_path)) == 0
    assert select_stage.main(select_args(tmp_path, params_path)) == 0
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    assert [r["id"] for r in read_jsonl(tmp_path / "selected.jsonl")] == [r["id"] for r in pairs]
    edit_params(params_path, select={"iteration_1.cap": 3})
    assert select_stage.main(select_args(tmp_path, params_path)) == 0
    first = [r["id"] for r in read_jsonl(tmp_path / "selected.jsonl")]
    edit_params(params_path, seeds={"sampling": 1})
    assert select_stage.main(select_args(tmp_path, params_path)) == 0
    second = [r["id"] for r in read_jsonl(tmp_path / "selected.jsonl")]
    assert len(first) == len(second) == 3 and first != second


def test_cap_keeps_the_best_scores_and_breaks_ties_by_id():
    rows = [{"id": f"p{i}", "score": s, "parsed": True} for i, s in enumerate([5.0, 1.0, 3.0, 3.0, None, 4.0])]
    rows[4]["parsed"] = False
    assert [r["id"] for r in select(rows, "pmi", 2.0, 0, 0)] == ["p0", "p2", "p3", "p5"]
    assert [r["id"] for r in select(rows, "pmi", 2.0, 3, 0)] == ["p0", "p2", "p5"]  # p2 beats p3 on the tie
    assert [r["id"] for r in select(rows, "pmi", 2.0, 1, 0)] == ["p0"]


def test_top_share_is_a_rank_level_that_follows_each_curators_own_ranking():
    # Two curators over the same six pairs, every score above the threshold: a threshold keeps all six for both,
    # the top half keeps each curator's own best three.
    m0 = [{"id": f"p{i}", "score": s, "parsed": True} for i, s in enumerate([9.0, 8.0, 7.0, 6.0, 5.0, 4.0])]
    m1 = [{"id": f"p{i}", "score": s, "parsed": True} for i, s in enumerate([4.0, 9.0, 5.0, 8.0, 7.0, 6.0])]
    assert select(m0, "pmi", 0.0, 0, 0) == m0 and select(m1, "pmi", 0.0, 0, 0) == m1
    first, second = select(m0, "pmi", 0.0, 0, 0, top_share=0.5), select(m1, "pmi", 0.0, 0, 0, top_share=0.5)
    assert [r["id"] for r in first] == ["p0", "p1", "p2"] and [r["id"] for r in second] == ["p1", "p3", "p4"]
    assert overlap(second, first) == {
        "shared": 1,
        "only_this": 2,
        "only_previous": 2,
        "jaccard": 0.2,
        "identical": False,
    }
    assert overlap(first, first)["identical"]
    # the share is of all scored pairs (rounded down), and the threshold still applies: a level is both
    assert len(select(m0, "pmi", 0.0, 0, 0, top_share=0.4)) == 2  # floor(2.4)
    assert [r["id"] for r in select(m0, "pmi", 8.5, 0, 0, top_share=0.5)] == ["p0"]
    assert [r["id"] for r in select(m0, "pmi", 0.0, 2, 0, top_share=0.5)] == ["p0", "p1"]  # then the cap
    # with no curator a share keeps a seeded sample of its size
    assert len(select(m0, "none", None, 0, 7, top_share=0.5)) == 3


def test_top_share_outside_its_range_is_refused_by_name(tmp_path):
    params = load_params(ROOT / "params.yaml")
    bad = dataclasses.replace(params.select, iteration_2=dataclasses.replace(params.select.iteration_2, top_share=0.0))
    with pytest.raises(ValueError, match="select.iteration_2.top_share"):
        top_share_of(dataclasses.replace(params, select=bad), 2)
    assert top_share_of(params, 1) == params.select.iteration_1.top_share


def test_histogram_bins_continuous_scores_and_counts_every_parsed_pair():
    scored = [{"score": float(v), "parsed": True} for v in (0, 1, 2, 9, 10)] + [{"score": None, "parsed": False}]
    rows = histogram(scored, "pmi", bins=5)
    assert list(rows) == ["0", "2", "4", "6", "8"]
    assert list(rows.values()) == [2, 1, 0, 0, 2]
    digits = [{"score": 3.2, "score_argmax": k, "parsed": True} for k in (1, 3, 3, 5)]
    assert histogram(digits, "logprob") == {"1": 1, "2": 0, "3": 2, "4": 0, "5": 1}
