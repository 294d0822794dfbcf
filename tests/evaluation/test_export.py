"""What users take away: the curated dataset folder (read back by `datasets.load_dataset`), the merged model (its
logits equal the adapter's), the publish command (HfApi replaced by a recorder), and no secret in anything written."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from humpback.storage.records import write_json, write_jsonl

PROMPTS = ["How do I read a file line by line?", "What is a generator?", "Explain list comprehensions."]
FAKE_SECRETS = {"OPENAI_API_KEY": "sk-fake-0123456789abcdef", "HF_TOKEN": "hf_fakeTOKENabcdefghijklmnop"}


def _pair(i: int, score: float) -> dict:
    return {
        "id": f"p{i}",
        "segment_id": f"s{i}",
        "instruction": f"What does section {i} explain?",
        "output": f"Section {i} explains how the import system finds modules. " * 3,
        "score": score,
        "score_argmax": None,
        "probs": None,
        "raw": None,
        "parsed": True,
    }


def _run_folder(tmp_path: Path) -> dict[str, list[str]]:
    """select@1/2's outputs and the web sample, as the stages wrote them: 6 scored pairs, 3 then 2 kept."""
    web = tmp_path / "web.jsonl"
    write_jsonl(
        web, [{"id": f"s{i}", "text": "...", "header": f"Header {i}", "doc": f"library/doc{i}.html"} for i in range(6)]
    )
    selected, metrics = [], []
    for iteration, kept in ((1, [0, 1, 2]), (2, [1, 2])):
        path = tmp_path / f"selected_{iteration}.jsonl"
        write_jsonl(path, [_pair(i, 20.0 - i) for i in kept])
        write_json(
            tmp_path / f"select_{iteration}.json",
            {
                "iteration": iteration,
                "method": "pmi",
                "threshold": 10.0,
                "top_share": 1.0,
                "cap": 0,
                "n": 6,
                "at_threshold": len(kept),
                "selected": len(kept),
                "histogram": {"-4.5": 2, "5.5": 1, "15.5": 3},
            },
        )
        selected.append(str(path))
        metrics.append(str(tmp_path / f"select_{iteration}.json"))
    return {"--selected": selected, "--select-metrics": metrics, "--web": [str(web)]}


def _export_dataset(tmp_path: Path) -> Path:
    from stages.export_dataset import main

    out = tmp_path / "export" / "dataset"
    args = [a for flag, values in _run_folder(tmp_path).items() for a in (flag, *values)]
    assert main([*args, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A LoRA adapter on the tiny model with random (non-zero) B matrices, saved as train@m2 saves one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("m2") / "m2"
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(base, config)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    write_json(
        out / "card.json",
        {
            "role": "m2",
            "examples": 12,
            "examples_seed": 9,
            "examples_augmented": 3,
            "steps": 3,
            "epochs": 1.0,
            "final_loss": 2.5,
            "params": {"train.lora": {"r": 4}, "seeds.training": 0},
        },
    )
    return out


def _comparisons() -> dict:
    return {
        "m2_vs_m0": {
            "loglik_other": {"difference": 0.0089, "ci_low": 0.0051, "ci_high": 0.0129, "n": 87},
            "judged": {"difference": 3.1, "ci_low": -6.0, "ci_high": 12.0, "n": 20},
        },
        "m1_vs_m0": {"loglik_other": {"difference": 0.002, "ci_low": -0.001, "ci_high": 0.005, "n": 87}},
    }


def _export_model(tmp_path: Path, adapter: Path, base: Path, params: str | None = None) -> Path:
    from stages.export_model import main

    write_json(tmp_path / "comparisons.json", _comparisons())
    out = tmp_path / "export" / "m2"
    args = [
        "--name",
        "m2",
        "--model",
        str(adapter),
        "--base",
        str(base),
        "--comparisons",
        str(tmp_path / "comparisons.json"),
        "--out",
        str(out),
    ]
    assert main(args + (["--params", params] if params else [])) == 0
    return out


def _logits(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits.masked_fill(~batch["attention_mask"].bool()[..., None], 0.0)


def test_the_dataset_loads_with_datasets_and_its_card_tells_where_it_came_from(tmp_path):
    import datasets
    from huggingface_hub import DatasetCard

    out = _export_dataset(tmp_path)
    loaded = datasets.load_dataset(str(out))
    assert set(loaded) == {"iteration_1", "iteration_2"}
    assert loaded["iteration_1"]["id"] == ["p0", "p1", "p2"] and loaded["iteration_2"]["id"] == ["p1", "p2"]
    row = loaded["iteration_2"][0]
    assert row["score"] == 19.0 and row["doc"] == "library/doc1.html" and row["header"] == "Header 1"
    assert row["output"].startswith("Section 1 explains")
    card = DatasetCard.load(out / "README.md")
    # the shipped params: Python docs text, curated by the models themselves with pmi
    assert card.data.license == "other" and card.data.license_name == "psf-2.0"
    assert "| iteration_2 | M1 (self-curation: seed + iteration 1 trained) | pmi | score ≥ 10 | 6 | 2 |" in card.text
    assert "| 15.5 | 3 | ████████████████████ |" in card.text


def test_the_merged_model_loads_without_peft_and_equals_the_adapter(tmp_path, tiny_model_dir, adapter_dir, monkeypatch):
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = _export_model(tmp_path, adapter_dir, tiny_model_dir)
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(out)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "peft", None)  # a user's machine without peft
        merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert merged.dtype == torch.float32  # the tiny base is stored in float32
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    expected = _logits(adapter, tokenizer)
    assert (_logits(base, tokenizer) - expected).abs().max() > 1e-3  # the adapter changes the model
    torch.testing.assert_close(_logits(merged, tokenizer), expected, atol=1e-5, rtol=1e-5)
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (
        "| M2 − M0 | log-likelihood of human answers from a source the pipeline never reads | +0.0089 | "
        "[+0.0051, +0.0129] | 87 | yes |" in card.text
    )
    assert "M1 − M0" not in card.text and '| `train.lora` | `{"r": 4}` |' in card.text


def test_export_dtype_bfloat16_writes_bf16_weights(tmp_path, tiny_model_dir, adapter_dir):
    from safetensors import safe_open

    from humpback.evaluation.export.model import ModelInfo, export_model

    info = ModelInfo(
        name="m2", base="a/folder", seed_source="jsonl", web_source="jsonl", tagging=True, system_prompt="S_a+S_w"
    )
    out = export_model(adapter_dir, tiny_model_dir, {}, info, "bfloat16", tmp_path / "bf16")
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118
    card = (out / "README.md").read_text()
    assert "license: unknown" in card
    # the card says how the run prompted the model it measured (here the paper's S_a+S_w, not the default S_a)
    from humpback.prompts import S_A, S_W

    assert f'answered with the system prompt "{S_A} {S_W}" (`respond.system_prompt` S_a+S_w)' in card


class Recorder:
    """HfApi's stand-in: records each call, touches no network."""

    calls: ClassVar[list[tuple[str, tuple, dict]]] = []

    def __init__(self, **kwargs):
        Recorder.calls.append(("__init__", (), kwargs))

    def create_repo(self, *args, **kwargs):
        Recorder.calls.append(("create_repo", args, kwargs))

    def upload_folder(self, *args, **kwargs):
        Recorder.calls.append(("upload_folder", args, kwargs))


@pytest.fixture
def recorder(monkeypatch):
    import humpback.evaluation.export.publish

    Recorder.calls = []
    monkeypatch.setattr(humpback.evaluation.export.publish, "HfApi", Recorder)
    return Recorder


def test_publish_uploads_exactly_the_checked_folder(tmp_path, recorder, capsys):
    from humpback.evaluation.export.publish import main

    folder = _export_dataset(tmp_path)
    (folder / ".cache").mkdir()
    (folder / ".cache" / "lock").write_text("x")
    assert main([str(folder), "--repo-id", "me/pairs", "--dry-run"]) == 0
    assert recorder.calls == [] and "would upload 3 files" in capsys.readouterr().out
    assert main([str(folder), "--repo-id", "me/pairs", "--private"]) == 0
    names = [name for name, _, _ in recorder.calls]
    assert names == ["__init__", "create_repo", "upload_folder"]
    assert recorder.calls[0][2] == {}  # no token handed over: huggingface_hub reads its own
    assert recorder.calls[1][1:] == (("me/pairs",), {"repo_type": "dataset", "private": True, "exist_ok": True})
    upload = recorder.calls[2][2]
    assert upload["folder_path"] == str(folder) and upload["repo_type"] == "dataset"
    assert upload["allow_patterns"] == ["README.md", "data/iteration_1.parquet", "data/iteration_2.parquet"]


def test_publish_refuses_an_adapter_and_a_folder_holding_a_secret(tmp_path, recorder, adapter_dir, monkeypatch, capsys):
    import shutil

    from humpback.evaluation.export.publish import main

    folder = tmp_path / "adapter"
    shutil.copytree(adapter_dir, folder)
    (folder / "config.json").write_text("{}")
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# x\n")
    assert main([str(folder), "--repo-id", "me/m"]) == 1
    assert "not a standalone model" in capsys.readouterr().err
    dataset = _export_dataset(tmp_path)
    monkeypatch.setenv("HF_TOKEN", FAKE_SECRETS["HF_TOKEN"])
    (dataset / "notes.txt").write_text(f"login with {FAKE_SECRETS['HF_TOKEN']}\n")
    assert main([str(dataset), "--repo-id", "me/pairs"]) == 1
    assert "notes.txt (HF_TOKEN): nothing uploaded" in capsys.readouterr().err
    assert recorder.calls == []


def test_no_secret_from_the_environment_lands_in_anything_written(
    tmp_path, tiny_model_dir, adapter_dir, recorder, monkeypatch, capsys, caplog
):
    from humpback.evaluation.export.publish import main

    for name, value in FAKE_SECRETS.items():
        monkeypatch.setenv(name, value)
    dataset = _export_dataset(tmp_path)
    model = _export_model(tmp_path, adapter_dir, tiny_model_dir)
    assert main([str(dataset), "--repo-id", "me/pairs"]) == 0 and main([str(model), "--repo-id", "me/m2"]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in written) and any(p.suffix == ".parquet" for p in written)
    captured = capsys.readouterr()
    for value in FAKE_SECRETS.values():
        assert not [p for p in written if value.encode() in p.read_bytes()]
        assert value not in captured.out + captured.err + caplog.text
        assert value not in repr(recorder.calls)
