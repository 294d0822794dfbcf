"""The params loader: the shipped file loads; typos, gaps and wrong types fail naming the key and file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from humpback.curation import methods
from humpback.params import MOVED, Params, ParamsError, load_params, track_reads

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_params_load():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.base.model.startswith("gguf:")
    assert params.curate.model == "self"  # the paper's self-curation stays the default
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.curate.threshold = 1  # frozen: stages cannot change params behind DVC's back


def test_unknown_key_names_key_and_file(tmp_path):
    path = _write(tmp_path, lambda raw: raw["curate"].update(treshold=4))
    with pytest.raises(ParamsError, match=r"params\.yaml: unknown key 'curate\.treshold'"):
        load_params(path)


def test_unknown_section(tmp_path):
    path = _write(tmp_path, lambda raw: raw.update(extra={"a": 1}))
    with pytest.raises(ParamsError, match="unknown key 'extra'"):
        load_params(path)


def test_missing_nested_key(tmp_path):
    path = _write(tmp_path, lambda raw: raw["train"]["lora"].pop("r"))
    with pytest.raises(ParamsError, match=r"missing key 'train\.lora\.r'"):
        load_params(path)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("train", "epochs", "ten", r"'train\.epochs' must be a number"),
        ("train", "epochs", True, r"'train\.epochs' must be a number"),
        ("train", "dtype", "float64", r"'train\.dtype' must be one of"),
        ("train", "batch_size", 2.5, r"'train\.batch_size' must be an integer"),
        ("train", "tagging", "yes", r"'train\.tagging' must be true or false"),
        ("curate", "method", "vibes", r"'curate\.method' must be one of"),
        ("curate", "threshold", "high", r"'curate\.threshold' must be a mapping"),
        ("curate", "threshold", {"logprob": 3.0}, r"missing key 'curate\.threshold\.generate'"),
        ("base", "model", 3, r"'base\.model' must be a string"),
    ],
)
def test_wrong_types(tmp_path, section, key, value, message):
    path = _write(tmp_path, lambda raw: raw[section].update({key: value}))
    with pytest.raises(ParamsError, match=message):
        load_params(path)


def test_float_accepts_yaml_exponent_strings(tmp_path):
    # YAML 1.1 reads `1e-5` (no dot) as a string; a float field must still accept it.
    path = _write(tmp_path, lambda raw: raw["train"].update(learning_rate="1e-5"))
    assert load_params(path).train.learning_rate == pytest.approx(1e-5)


def test_list_item_types(tmp_path):
    path = _write(tmp_path, lambda raw: raw["train"]["lora"].update(target_modules=["q_proj", 7]))
    with pytest.raises(ParamsError, match=r"'train\.lora\.target_modules\[1\]' must be a string"):
        load_params(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_key_names_its_new_place(tmp_path, old):
    """An older params file fails helpfully: the message says where the key lives now."""
    new = MOVED[old].split(" ")[0]

    def put_back(raw):
        section, *rest = old.split(".")
        node = raw[section]
        for part in rest[:-1]:
            node = node[part]
        node[rest[-1]] = 1

    path = _write(tmp_path, put_back)
    with pytest.raises(ParamsError, match=rf"'{old}' has moved to {new}"):
        load_params(path)


def test_the_method_table_and_the_params_agree():
    """Every curation method has a threshold in params.yaml and the schema, and nothing else does."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert list(raw["curate"]["threshold"]) == list(methods.NAMES)
    params = load_params(ROOT / "params.yaml")
    assert [f.name for f in dataclasses.fields(params.curate.threshold)] == list(methods.NAMES)
    assert set(raw["curation_quality"]["methods"]) <= set(methods.NAMES)
    assert params.curate.method in (methods.NO_CURATION, *methods.NAMES)


def test_reads_are_recorded_as_dotted_leaf_keys():
    params = load_params(ROOT / "params.yaml")
    reads = track_reads()
    _ = params.select.iteration_2.cap, params.curate.threshold.pmi, params.train.lora
    dataclasses.asdict(params.generation)
    assert reads == {
        "select.iteration_2.cap",
        "curate.threshold.pmi",
        *(f"generation.{f.name}" for f in dataclasses.fields(params.generation)),
    }


def test_values_records_exactly_the_named_keys():
    params = load_params(ROOT / "params.yaml")
    values = params.values(["select.iteration_1", "train.lora.r", "curate.method"])
    first = params.select.iteration_1
    assert values == {
        "select.iteration_1": {"threshold": "default", "top_share": first.top_share, "cap": 0},
        "train.lora.r": 16,
        "curate.method": params.curate.method,
    }


# ------------------------------------------------------------------------------------- an engine per stage

ENGINE_STAGES = ("augment", "curate", "respond", "evaluate")


def test_every_stage_defaults_to_the_shared_engine():
    from humpback.engines.factory import resolve_engine, stage_settings

    params = load_params(ROOT / "params.yaml")
    for stage in ENGINE_STAGES:
        section = getattr(params, stage)
        assert (section.engine, section.api_model) == ("default", "default")
        assert getattr(params.runtime, f"{stage}_base_url") == ""
        settings = stage_settings(params, stage)
        generation = settings.generation  # the shared settings, `auto` resolved once for this machine
        engine = resolve_engine(params.generation.engine)
        assert generation == dataclasses.replace(params.generation, engine=engine, dtype=generation.dtype)
        assert "auto" not in (generation.engine, generation.dtype)
        assert settings.runtime == params.runtime


def test_auto_precision_depends_on_the_kind_of_work(monkeypatch):
    """`auto`: bf16 for decoding wherever oneDNN has bf16 kernels; for reads (compute-bound) with AMX, or where
    this CPU's bf16 matmuls measure fast (`models.cpu_bf16_matmul_speedup`, pinned here)."""
    import torch

    from humpback.engines import models
    from humpback.engines.factory import stage_settings

    params = load_params(ROOT / "params.yaml")
    assert params.generation.dtype == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    for amx, speedup, read_dtype in ((False, 0.6, "float32"), (False, 2.2, "bfloat16"), (True, 0.6, "bfloat16")):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda amx=amx: {"amx_bf16": amx})
        monkeypatch.setattr(models, "cpu_bf16_matmul_speedup", lambda speedup=speedup: speedup)
        assert stage_settings(params, "augment").generation.dtype == "bfloat16"
        assert stage_settings(params, "curate", reads_only=True).generation.dtype == read_dtype
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert stage_settings(params, "augment").generation.dtype == "float32"


def test_a_stage_names_its_own_engine_model_and_server(tmp_path):
    """Augment on a vLLM server, curate in-process, judge with an API model: each stage gets only its own."""
    from humpback.engines.factory import stage_settings

    def per_stage(raw):
        raw["generation"].update(engine="transformers", api_model="")
        raw["augment"].update(engine="openai")
        raw["curate"].update(engine="transformers")
        raw["evaluate"].update(engine="openai", api_model="gpt-4o")
        raw["runtime"].update(base_url="http://gpu:8000/v1", evaluate_base_url="https://api.example/v1")

    params = load_params(_write(tmp_path, per_stage))
    settings = {stage: stage_settings(params, stage) for stage in ENGINE_STAGES}
    assert {s: (e.generation.engine, e.generation.api_model, e.runtime.base_url) for s, e in settings.items()} == {
        "augment": ("openai", "", "http://gpu:8000/v1"),  # the shared server and model name
        "curate": ("transformers", "", "http://gpu:8000/v1"),
        "respond": ("transformers", "", "http://gpu:8000/v1"),  # default: generation.engine
        "evaluate": ("openai", "gpt-4o", "https://api.example/v1"),
    }
    # everything else is the shared settings, untouched
    assert all(e.generation.temperature == params.generation.temperature for e in settings.values())
    with pytest.raises(ValueError, match="no engine settings for stage 'train'"):
        stage_settings(params, "train")


@pytest.mark.parametrize("stage", ENGINE_STAGES)
def test_an_unknown_stage_engine_names_the_choices(tmp_path, stage):
    path = _write(tmp_path, lambda raw: raw[stage].update(engine="gpu"))
    with pytest.raises(
        ParamsError,
        match=rf"'{stage}\.engine' must be one of \['default', 'auto', 'transformers', "
        r"'vllm', 'openai'\], got 'gpu'",
    ):
        load_params(path)


def test_the_old_judge_keys_say_where_they_went(tmp_path):
    with pytest.raises(
        ParamsError,
        match=r"'evaluate\.judge' has moved to evaluate\.engine \(local = default, "
        r"transformers or vllm; openai = openai with no server URL",
    ):
        load_params(_write(tmp_path, lambda raw: raw["evaluate"].update(judge="openai")))
    with pytest.raises(ParamsError, match=r"'runtime\.judge_base_url' has moved to runtime\.evaluate_base_url"):
        load_params(_write(tmp_path, lambda raw: raw["runtime"].update(judge_base_url="http://x/v1")))


@pytest.mark.parametrize("override", [False, True])
def test_stage_settings_read_only_what_dvc_yaml_declares(tmp_path, override):
    """What each stage's engine settings read is in its dvc.yaml params (runtime.* never is), whether the stage
    defers to generation.* or names its own."""
    from humpback.engines.factory import stage_settings
    from tests.test_pipeline import declared_params

    def own(raw):
        for stage in ENGINE_STAGES:
            raw[stage].update(engine="openai", api_model="m")

    params = load_params(_write(tmp_path, own) if override else ROOT / "params.yaml")
    users = {
        "augment": ["augment"],
        "curate": ["score@1", "score@2", "score_dev@m0"],
        "respond": ["respond@m1"],
        "evaluate": ["evaluate"],
    }
    for stage, dvc_stages in users.items():
        reads = track_reads()
        stage_settings(params, stage)
        reads = {k for k in reads if not k.startswith("runtime.")}
        assert {f"{stage}.engine", f"{stage}.api_model"} <= reads
        assert ("generation.engine" in reads) is not override
        for dvc_stage in dvc_stages:
            assert reads <= declared_params(dvc_stage), (dvc_stage, reads - declared_params(dvc_stage))
