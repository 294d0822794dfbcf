"""benchmarks/gpu_check.py on this CPU: without a GPU it skips cleanly (exit 0, a JSON saying so), and its
checks run end to end on the CPU with the tiny model, so the script still fits the code on the day a GPU is
lent (a GPU run is then one command, not a debugging session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")  # no GPU, even on a machine with one
    return subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_without_a_gpu_it_skips_with_exit_0_and_says_so(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = gpu_check("--out", str(out), "--assets", str(tmp_path / "never-prepared"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["skipped"].startswith("no CUDA device") and "checks" not in report
    assert "skipped" in proc.stdout


@pytest.mark.slow  # about a minute on a shared 2-core CPU: five checks, each loading the model
def test_the_checks_run_on_the_cpu(tiny_model_dir, tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = gpu_check(
        "--device",
        "cpu",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--check-prompts",
        "3",
        "--prompts",
        "3",
        "--new-tokens",
        "6",
        "--pairs",
        "3",
        "--train-steps",
        "2",
    )
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert proc.returncode == 0, json.dumps(checks, indent=1)
    assert report["skipped"] is None and report["ok"] is True
    assert set(checks) == {"greedy_fp32", "logprobs_fp32", "logprobs_bf16", "lora_bf16", "throughput"}
    assert checks["greedy_fp32"]["same_text"] == 3
    assert checks["logprobs_fp32"]["completion_max_abs_difference"] <= 1e-3
    lora = checks["lora_bf16"]
    # train.dtype auto: bf16 where this CPU's bf16 matmuls are fast, else fp32 (the check compares it with that)
    assert lora["steps"] == 2 and lora["precision"] in {"bf16", "fp32"}
    assert lora["lora_tensors_changed"] > 0 and lora["base_tensors_changed"] == 0
    assert {g["token_budget"] for g in checks["throughput"]["generation"]} >= {65536}
    assert set(checks["throughput"]["curation"]) == {"logprob", "pmi"}
