"""Profiles: one switch (`python -m humpback.profiles NAME`) for dvc repro and dvc exp run alike."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import yaml

from humpback.params import ParamsError, load_params
from humpback.profiles import apply, available, leaf_keys, overrides

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def params_file(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    return path


def test_default_holds_the_shipped_value_of_every_key_a_profile_sets():
    shipped = leaf_keys(yaml.safe_load((ROOT / "params.yaml").read_text()))
    default = leaf_keys(overrides("default"))
    for name in available():
        assert set(leaf_keys(overrides(name))) <= set(default), f"{name} sets keys default does not restore"
    assert default == {k: shipped[k] for k in default}


def test_switching_to_a_profile_and_back(params_file):
    original = load_params(params_file)
    changed = apply("paper", params_file)
    assert "train.method" in changed and "curate.method" in changed
    assert "# Every knob of the pipeline." in params_file.read_text()  # comments survive the switch
    assert load_params(params_file) != original
    apply("default", params_file)
    assert load_params(params_file) == original


@pytest.mark.parametrize("name", ["paper", "quality"])
def test_switching_back_restores_params_yaml_byte_for_byte(params_file, name):
    """The values (`1.0e-3`, `""`), their quotes and the comments' columns: `make profile PROFILE=default` leaves
    no diff in git, even after a runtime file pushed a comment right with a long value."""
    from humpback.profiles import apply_runtime

    shipped = params_file.read_text()
    apply(name, params_file)
    apply_runtime("node-8gpu", params_file)
    assert params_file.read_text() != shipped
    apply("default", params_file)
    apply_runtime("default", params_file)
    assert params_file.read_text() == shipped


def test_the_paper_profile_is_the_papers_setup(params_file):
    """The figures of Li et al. 2023 (arXiv 2308.06259), sections "Finetuning", "System-prompt tagging",
    "Decoding" and step 8 of the method ("A(5)" means score >= 4.5)."""
    apply("paper", params_file)
    p = load_params(params_file)
    assert (p.train.method, p.train.learning_rate, p.train.final_learning_rate) == ("full", 1e-5, 9e-6)
    assert (p.train.weight_decay, p.train.dropout) == (0.1, 0.1)
    assert (p.train.epochs, p.train.batch_size) == (0, 0)  # the steps table and the batch rule
    assert (p.generation.temperature, p.generation.top_p) == (0.7, 0.9)
    assert (p.curate.method, p.curate.threshold.generate, p.curate.model) == ("generate", 4.5, "self")
    assert p.train.tagging and p.respond.system_prompt == "S_a+S_w"
    assert (p.data.seed.source, p.data.seed.language) == ("oasst1", "en")
    assert (p.data.web.source, p.data.eval.source, p.data.eval.reference) == ("warc", "alpaca-eval", "text_davinci_003")
    # AlpacaEval 1's annotator through OpenAI's API, the leaderboard the paper's 83.71 is in (docs/judges.md)
    assert (p.evaluate.engine, p.evaluate.judge_read, p.evaluate.annotator) == (
        "openai",
        "pairwise",
        "alpaca_eval_gpt4",
    )


def test_a_profile_cannot_invent_keys(params_file, tmp_path, monkeypatch):
    from humpback import profiles

    (tmp_path / "bad.yaml").write_text("train:\n  lerning_rate: 1\n")
    monkeypatch.setattr(profiles, "PROFILES_DIR", tmp_path)
    with pytest.raises(ParamsError, match="train.lerning_rate"):
        apply("bad", params_file)
    with pytest.raises(ParamsError, match="no profile 'nope'"):
        apply("nope", params_file)


# --------------------------------------------------------------------------- the paper profile's table

# A length or size limit of params.yaml: its name says max_/min_/limit/..., bar those that are shares or attempts.
# runtime.* is execution (configs/runtime/), never a limit on what is computed.
LIMIT_NAME = re.compile(r"(^|_)(max|min)_|^(limit|heldout|cap|positives|negatives_per_kind)$")
NOT_LIMITS = {"max_retries", "max_repetition", "max_bad_fraction"}
TABLE_ROW = re.compile(
    r"^\| (?P<paper>[^|]+) \| (?P<section>[^|]+) \| `(?P<key>[a-z0-9_.]+)` \| `(?P<value>[^`]*)` \|$", re.MULTILINE
)
NO_CAP_TOKENS = 4096  # Llama-2-7B's context: a token limit this large cannot cut earlier than the context
NO_CAP_CHARS = 1_000_000


def limit_keys(params: dict) -> set[str]:
    return {
        k
        for k in leaf_keys(params)
        if not k.startswith("runtime.")
        and LIMIT_NAME.search(k.rsplit(".", 1)[-1])
        and k.rsplit(".", 1)[-1] not in NOT_LIMITS
    }


def paper_table() -> dict[str, tuple[str, object]]:
    """docs/paper-profile.md's settings table: {key: (paper value, profile value as YAML)}."""
    rows = {
        m["key"]: (m["paper"], yaml.safe_load(m["value"]))
        for m in TABLE_ROW.finditer((ROOT / "docs" / "paper-profile.md").read_text())
    }
    assert len(rows) > 40, "the settings table was not found"
    return rows


def test_the_paper_table_names_every_limit_and_every_setting_of_the_profile(params_file):
    table = paper_table()
    shipped = yaml.safe_load(params_file.read_text())
    limits = limit_keys(shipped)
    # the list the issue names, so the pattern cannot quietly miss one of them
    assert {
        "respond.max_new_tokens",
        "evaluate.max_chars",
        "augment.max_new_tokens",
        "augment.max_instruction_chars",
        "curate.max_new_tokens",
        "curate.max_pair_chars",
        "likelihood.max_chars",
        "train.max_seq_len",
        "train.backward_max_output_tokens",
        "data.seed.limit",
    } <= limits
    assert not limits - set(table), "limits missing from docs/paper-profile.md"
    assert not set(leaf_keys(overrides("paper"))) - set(table), "paper.yaml settings missing from the table"
    apply("paper", params_file)
    assert set(table) <= set(leaf_keys(shipped)), "the table names keys params.yaml does not have"
    effective = load_params(params_file).values(list(table))  # typed: YAML's 1e-05 is a string, 1.0e-5 a float
    for key, (paper, value) in table.items():
        assert effective[key] == value, f"{key}: the table says {value!r}, the paper profile sets {effective[key]!r}"
        if paper.startswith(("not reported: no cap", "not reported: no cut", "no cut")):
            # no cap: a character limit nothing reaches, a token limit of the whole context, or 0 (= whole)
            bound = NO_CAP_CHARS if key.endswith("chars") else NO_CAP_TOKENS
            assert value == 0 or value >= bound, f"{key}: '{paper}' but the profile caps it at {value}"
    assert effective["data.seed.limit"] == 3200  # the paper's seed size


# --------------------------------------------------------------------------- runtime files


def test_a_runtime_file_changes_runtime_only_and_default_switches_back(params_file):
    from humpback.profiles import RUNTIME_DIR, apply_runtime

    shipped = leaf_keys(yaml.safe_load(params_file.read_text()))
    default = leaf_keys(overrides("default", RUNTIME_DIR))
    assert default == {k: shipped[k] for k in default}, "configs/runtime/default.yaml is not the shipped runtime"
    original = load_params(params_file)
    for name in available(RUNTIME_DIR):
        sets = set(leaf_keys(overrides(name, RUNTIME_DIR)))
        assert sets <= set(default), f"{name} sets keys default does not restore"
        changed = apply_runtime(name, params_file)
        assert all(k.startswith("runtime.") for k in changed), changed
        after = load_params(params_file)
        assert dataclasses.replace(after, runtime=original.runtime) == original, f"{name} changed a tracked param"
        apply_runtime("default", params_file)
        assert load_params(params_file) == original


def test_the_node_runtime_file_sets_a_node_of_8_gpus(params_file):
    from humpback.profiles import apply_runtime

    apply("paper", params_file)
    tracked = load_params(params_file)
    changed = apply_runtime("node-8gpu", params_file)
    assert {
        "runtime.launcher.kind",
        "runtime.save_steps",
        "runtime.augment_shard_size",
        "runtime.tensor_parallel_size",
    } <= set(changed)
    runtime = load_params(params_file).runtime
    assert (runtime.launcher.kind, runtime.launcher.processes, runtime.tensor_parallel_size) == ("accelerate", 8, 8)
    assert (ROOT / runtime.launcher.config).is_file()
    assert runtime.save_steps >= 100 and runtime.augment_shard_size >= 1024 and runtime.score_shard_size >= 1024
    assert 0 < runtime.gpu_memory_utilization <= 0.95
    assert dataclasses.replace(load_params(params_file), runtime=tracked.runtime) == tracked


def test_a_runtime_file_cannot_set_a_tracked_param(params_file, tmp_path, monkeypatch):
    from humpback import profiles

    (tmp_path / "sneaky.yaml").write_text("runtime:\n  save_steps: 10\ntrain:\n  learning_rate: 1\n")
    monkeypatch.setattr(profiles, "RUNTIME_DIR", tmp_path)
    before = params_file.read_text()
    with pytest.raises(ParamsError, match="sets 'train.learning_rate'"):
        profiles.apply_runtime("sneaky", params_file)
    assert params_file.read_text() == before
    with pytest.raises(ParamsError, match="no runtime file 'nope'"):
        profiles.apply_runtime("nope", params_file)
