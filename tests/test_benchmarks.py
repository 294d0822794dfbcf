"""Every benchmark runs against today's library: each `benchmarks/*.py` at its smallest size, in this process
(its `main(argv)`), on the tiny model and a few fixture rows, and its JSON has the fields docs/benchmarks.md
lists for it ("What each benchmark writes"). The figures of such a run mean nothing; that the code they
measure still fits the benchmark is the point (the benchmarks broke silently when nothing ran them)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from humpback.curation.devset import build_dev_set
from humpback.storage.records import read_json, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "tiny_profile"
DOC = ROOT / "docs" / "benchmarks.md"


def documented_fields() -> dict[str, list[str]]:
    """benchmark (with its mode, if any) -> the fields docs/benchmarks.md says its JSON has."""
    section = DOC.read_text(encoding="utf-8").split("## What each benchmark writes", 1)[1]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = re.findall(r"`([^`]+)`", cells[2].split("(", 1)[0])
    return rows


def lookup(data, path: list[str]) -> list:
    """The values at a dotted path; `*` fans out over every entry of a mapping (none: the path is missing)."""
    if not path:
        return [data]
    head, rest = path[0], path[1:]
    if not isinstance(data, dict):
        return []
    if head == "*":
        return [v for value in data.values() for v in lookup(value, rest)] if data else []
    return lookup(data[head], rest) if head in data else []


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """The few rows each benchmark reads, as the pipeline's stages write them, and a params file whose web
    pool is the python-docs fixture."""
    folder = tmp_path_factory.mktemp("bench-inputs")
    seed = [json.loads(line) for line in (FIXTURES / "seed.jsonl").read_text().splitlines()]
    pairs = [{**p, "id": f"faq-{i:03d}", "source": "fixture"} for i, p in enumerate(seed)]
    web = [
        {**json.loads(line), "id": f"web-{i}", "header": f"Section {i}", "doc": "x.html"}
        for i, line in enumerate((FIXTURES / "web.jsonl").read_text().splitlines())
    ]
    write_jsonl(folder / "seed.jsonl", pairs[:8])
    write_jsonl(folder / "pairs.jsonl", pairs[:2])
    write_jsonl(folder / "web.jsonl", web[:2])
    # every held-out pair a positive, so each kind of bad answer has its human answer (judges pairs them)
    write_jsonl(folder / "dev.jsonl", build_dev_set(pairs[8:], web, positives=4, negatives_per_kind=1))
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["web"]["path"] = str(ROOT / "tests" / "fixtures" / "pydocs")
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    return {"model": tiny_model_dir, **{p.stem: p for p in folder.iterdir()}}


def smoke_argv(run: str, i: dict[str, Path]) -> list[str]:
    """The smallest run of each benchmark (docs/benchmarks.md lists the same)."""
    model = str(i["model"])
    return {
        "curation": ["--model", model, "--pairs", str(i["pairs"]), "--n", "2", "--baseline-new-tokens", "2"],
        "cluster": ["--model", model, "--web", str(i["web"]), "--n", "2", "--max-new-tokens", "2"],
        "curators": ["--curator", f"tiny={model}", "--dev", str(i["dev"])],
        "generation": ["--model", model, "--web", str(i["web"]), "--n", "2", "--max-new-tokens", "4"],
        "gpu_check": [
            "--device",
            "cpu",
            "--model",
            model,
            "--check-prompts",
            "1",
            "--prompts",
            "1",
            "--new-tokens",
            "2",
            "--pairs",
            "1",
            "--train-steps",
            "1",
        ],
        "judges": ["--judge", f"tiny={model}", "--reads", "pairwise", "pmi", "--per-kind", "1", "--dev", str(i["dev"])],
        "rater_text injected": ["injected", "--curator", model, "--pairs", "1", "--seeds", "1", "--methods", "logprob"],
        "rater_text false-positives": ["false-positives", "--params", str(i["params"])],
        "segmentation": ["--pages", "20"],
        "train_throughput": ["--base", model, "--seed-pairs", str(i["seed"]), "--steps", "2", "--rounds", "1"],
    }[run]


RUNS = [
    "cluster",
    "curation",
    "curators",
    "generation",
    "gpu_check",
    "judges",
    "rater_text injected",
    "rater_text false-positives",
    "segmentation",
    "train_throughput",
]


def test_every_benchmark_has_a_smoke_run_and_documented_fields():
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__"}
    assert {run.split()[0] for run in RUNS} == scripts
    assert set(documented_fields()) == set(RUNS)


def sides_in_this_process(module, monkeypatch) -> None:
    """train_throughput runs each side as `python train_throughput.py --side ...`: here that command's arguments
    go through the same `main` in this process (a new interpreter would import torch again, ~15 s a side on
    2 cores); only the process boundary, there for each side's own peak memory, is left out."""

    def run(cmd: list[str], **_) -> subprocess.CompletedProcess:
        assert Path(cmd[1]) == Path(module.__file__)
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            module.main(cmd[2:])
        return subprocess.CompletedProcess(cmd, 0, stdout.getvalue(), "")

    monkeypatch.setattr(module, "subprocess", SimpleNamespace(run=run))


@pytest.fixture
def transformers_logging():
    """A benchmark side silences transformers for its own process; the tests after it get theirs back."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    yield
    hf_logging.set_verbosity(verbosity)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()


@pytest.mark.parametrize("run", RUNS)
def test_benchmark_runs_and_writes_its_documented_fields(
    run, inputs, tmp_path, monkeypatch, transformers_logging, request
):
    name = run.split()[0]
    if name == "cluster":  # the tests' one way to start Ray (the benchmark uses a Ray that runs)
        request.getfixturevalue("ray_local")
    out = tmp_path / f"{name}.json"
    module = importlib.import_module(f"benchmarks.{name}")
    if name == "train_throughput":
        sides_in_this_process(module, monkeypatch)
    rc = module.main([*smoke_argv(run, inputs), "--out", str(out)])
    assert rc in (None, 0)
    result = read_json(out)
    missing = [f for f in documented_fields()[run] if not lookup(result, f.split("."))]
    assert not missing, f"{run}: fields docs/benchmarks.md lists but the JSON lacks: {missing}"
    if "ratio" in result:  # ours / theirs from one run: a real, positive measurement
        assert math.isfinite(result["ratio"]) and result["ratio"] > 0
    if name == "gpu_check":  # on the CPU the checks still compare our engine and training with stock code
        assert result["skipped"] is None and result["ok"] is True, json.dumps(result["checks"], indent=1)
    if name == "curators":
        assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
