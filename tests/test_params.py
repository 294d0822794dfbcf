"""The params loader: the shipped file loads; typos, gaps and wrong types fail naming the key and file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from humpback import curation_methods
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
    assert list(raw["curate"]["threshold"]) == list(curation_methods.NAMES)
    params = load_params(ROOT / "params.yaml")
    assert [f.name for f in dataclasses.fields(params.curate.threshold)] == list(curation_methods.NAMES)
    assert set(raw["curation_quality"]["methods"]) <= set(curation_methods.NAMES)
    assert params.curate.method in (curation_methods.NO_CURATION, *curation_methods.NAMES)


def test_reads_are_recorded_as_dotted_leaf_keys():
    params = load_params(ROOT / "params.yaml")
    reads = track_reads()
    _ = params.select.iteration_2.cap, params.curate.threshold.pmi, params.train.lora
    dataclasses.asdict(params.generation)
    assert reads == {"select.iteration_2.cap", "curate.threshold.pmi",
                     *(f"generation.{f.name}" for f in dataclasses.fields(params.generation))}


def test_values_records_exactly_the_named_keys():
    params = load_params(ROOT / "params.yaml")
    values = params.values(["select.iteration_1", "train.lora.r", "curate.method"])
    assert values == {"select.iteration_1": {"threshold": "default", "cap": 0}, "train.lora.r": 16,
                      "curate.method": params.curate.method}
