"""The whole DAG under `dvc repro`, on a tiny profile, in a temporary copy of the repository.

Checks what users rely on: every stage runs; every stage reads exactly the params dvc.yaml lists for it; a
second `dvc repro` runs nothing; a change reruns only what it touches (a threshold or cap never re-scores,
execution settings rerun nothing); and `dvc push` to a local remote followed by `dvc pull` in a fresh clone
restores every output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "tiny_profile"

CURATORS = ("base", "m0", "m1", "curator")
ALL_STAGES = {
    "prepare_base",
    "prepare_curator",
    "prepare_seed",
    "prepare_web",
    "sample_web",
    "prepare_eval",
    "prepare_dev",
    "train_backward",
    "train@m0",
    "train@m1",
    "train@m2",
    "augment",
    "score@1",
    "score@2",
    "select@1",
    "select@2",
    "respond@base",
    "respond@m0",
    "respond@m1",
    "respond@m2",
    "evaluate",
    "prepare_other",
    "likelihood@base",
    "likelihood@m0",
    "likelihood@m1",
    "likelihood@m2",
    *(f"score_dev@{c}" for c in CURATORS),
    *(f"curation_quality@{c}" for c in CURATORS),
    "report",
    "export_dataset",
    "export_model@m2",
}
# Params keys a stage declares but may not read under the tiny profile, each for a reason the DAG cannot
# express (dvc.yaml has no conditional dependencies). Everything else declared must be read, and everything
# read must be declared.
CONDITIONAL_READS = {
    # read only by the source in use (python-faq / jsonl / oasst1; html / warc / parquet / jsonl)
    "prepare_seed": {
        "data.seed.instruction_field",
        "data.seed.output_field",
        "data.seed.language",
        "data.seed.path",
        "data.seed.on_bad_record",
    },
    "prepare_web": {"data.web.text_field", "data.web.path", "data.web.on_bad_record"},
    "prepare_eval": {"data.eval.instruction_field", "data.eval.reference", "data.eval.path", "data.eval.on_bad_record"},
    # the method-keyed threshold table: each run reads the threshold of curate.method (and of each
    # curation_quality method); the sampling seed only when curate.method is none and a cap is set
    "select": {"curate.threshold.*", "seeds.sampling"},
    "curation_quality": {"curate.threshold.*"},
    # read only by the generate method (sampling, its reply length and retries) and the openai engine
    "score_dev": {
        "curate.max_new_tokens",
        "curate.max_retries",
        "seeds.generation",
        "generation.api_model",
        "generation.temperature",
        "generation.top_p",
    },
    # the `curator` item while curate.model is self: there is no named curator, nothing to score
    "score_dev@curator": {"*"},
    "curation_quality@curator": {"*"},
    "evaluate": {"generation.api_model", "generation.temperature", "generation.top_p"},
    "respond": {"generation.api_model"},
    "likelihood": {"generation.api_model"},
}

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # `python` in dvc.yaml must be this interpreter (the project's venv).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.com"
    return env


def _run(args: list[str], cwd: Path, **env: str) -> str:
    proc = subprocess.run(args, cwd=cwd, env={**_env(), **env}, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
        )
    return proc.stdout + proc.stderr


def _dvc(*args: str, cwd: Path, **env: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd, **env)


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _tiny_profile(raw: dict, model_dir: Path) -> dict:
    raw["base"]["model"] = str(model_dir)
    raw["data"]["seed"].update(source="jsonl", path=str(FIXTURES / "seed.jsonl"), heldout=3, limit=0)
    raw["data"]["web"].update(source="jsonl", path=str(FIXTURES / "web.jsonl"), min_chars=100, max_chars=3000, limit=20)
    raw["data"]["eval"].update(source="jsonl", path=str(FIXTURES / "eval.jsonl"), limit=5)
    raw["data"]["other"]["path"] = str(ROOT / "tests" / "fixtures" / "project_faqs")
    raw["train"].update(epochs=0.2, batch_size=2, micro_batch_size=2, max_seq_len=192, backward_max_output_tokens=128)
    # A random tiny model writes no text that looks like an instruction; keep only the emptiness filter.
    raw["augment"].update(max_new_tokens=12, filters=["empty"])
    raw["curate"].update(max_new_tokens=12)
    raw["runtime"].update(save_steps=1, augment_shard_size=8, score_shard_size=8)
    # A random tiny model's scores mean nothing: keep every pair so m1 and m2 still train on augmented data.
    raw["curate"]["threshold"].update(
        logprob=1.0, generate=1.0, rubric_calibrated=-1e9, yes_no=0.0, likelihood_gain=-1e9, pmi=-1e9
    )
    raw["respond"].update(max_new_tokens=12)
    raw["evaluate"].update(max_chars=300)
    raw["curation_quality"].update(positives=3, negatives_per_kind=1, bootstrap=100)
    return raw


def copy_checkout(dest: Path) -> Path:
    """The working tree's files (tracked, and untracked ones git does not ignore) copied to `dest`: what a fresh
    clone of the current state would hold, without the DVC outputs and caches of this checkout."""
    files = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).split("\n")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git+DVC copy of the working tree with the tiny profile, `dvc repro` already run once."""
    work = tmp_path_factory.mktemp("pipeline")
    dest = copy_checkout(work / "repo")
    model_dir = build_tiny_model(work / "tiny-base")
    params_path = dest / "params.yaml"
    params_path.write_text(yaml.safe_dump(_tiny_profile(yaml.safe_load(params_path.read_text()), model_dir)))
    _run(["git", "init", "-q", "-b", "main"], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "tiny profile"], dest)
    first = _dvc("repro", cwd=dest, HUMPBACK_PARAMS_READS=str(work / "reads.jsonl"))
    (work / "first_repro.log").write_text(first)
    return dest


def declared_params(stage_name: str) -> set[str]:
    """The leaf keys dvc.yaml lists for a stage (a section stands for every key under it)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    base, _, item = stage_name.partition("@")
    stage = stages[base]
    items = stage.get("foreach")
    fields = items.get(item) if isinstance(items, dict) else None  # a foreach item's own values: ${item.<field>}
    stage = stage.get("do", stage)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())

    def leaves(node, prefix: str) -> set[str]:
        if isinstance(node, dict):
            return set().union(*(leaves(v, f"{prefix}.{k}") for k, v in node.items()))
        return {prefix}

    keys = set()
    for entry in stage.get("params", []):
        key = entry.replace("${item}", item).replace("${key}", item)
        if isinstance(fields, dict):
            key = re.sub(r"\$\{item\.(\w+)\}", lambda m: fields[m.group(1)], key)
        node = raw
        for part in key.split("."):
            node = node[part]
        keys |= leaves(node, key)
    return keys


def recorded_reads(log: Path) -> dict[str, set[str]]:
    """Stage → the params keys it read (runtime.* excluded: no stage may list them), from a recorded run."""
    reads: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        record = json.loads(line)
        keys = {k for k in record["keys"] if not k.startswith("runtime.")}
        reads.setdefault(record["stage"], set()).update(keys)
    return reads


def params_mismatches(reads: dict[str, set[str]]) -> list[str]:
    problems = []
    for stage, keys in sorted(reads.items()):
        declared = declared_params(stage)
        allowed = CONDITIONAL_READS.get(stage.partition("@")[0], set()) | CONDITIONAL_READS.get(stage, set())
        undeclared = keys - declared
        unread = {
            k
            for k in declared - keys
            if k not in allowed and not any(a.endswith("*") and k.startswith(a[:-1]) for a in allowed)
        }
        if undeclared or unread:
            problems.append(f"{stage}: reads undeclared {sorted(undeclared)}; declares unread {sorted(unread)}")
    return problems


def _status(repo: Path) -> set[str]:
    """The stages `dvc status` says changed (their own params, code or inputs; not what runs after them)."""
    out = json.loads(_dvc("status", "--json", cwd=repo) or "{}")
    return {name.split(":")[-1] for name in out}


def _with_params(repo: Path, edit) -> set[str]:
    """Apply `edit` to params.yaml, return `dvc status`'s changed stages, and restore the file."""
    path = repo / "params.yaml"
    original = path.read_text()
    raw = yaml.safe_load(original)
    edit(raw)
    path.write_text(yaml.safe_dump(raw))
    try:
        return _status(repo)
    finally:
        path.write_text(original)


def test_first_repro_runs_every_stage(repo):
    ran = _ran((repo.parent / "first_repro.log").read_text())
    assert ran == ALL_STAGES
    for counts in ["prepare_seed", "prepare_web", "sample_web", "prepare_eval"]:
        metrics = yaml.safe_load((repo / "metrics" / f"{counts}.json").read_text())
        assert metrics["read"] == metrics["kept"] + sum(metrics["dropped"].values())
    evaluate = yaml.safe_load((repo / "metrics" / "evaluate.json").read_text())
    assert {"m0", "m1", "m2"} <= set(evaluate["models"])
    for curator in ("base", "m0", "m1"):
        quality = yaml.safe_load((repo / "metrics" / "curation_quality" / f"{curator}.json").read_text())
        assert {"length", "pmi", "likelihood_gain"} <= set(quality["methods"]) and "roc_auc_ci" in quality
    assert "skipped" in yaml.safe_load((repo / "metrics" / "curation_quality" / "curator.json").read_text())
    assert "### Every method × curator" in (repo / "metrics" / "report.md").read_text()


def test_every_stage_reads_exactly_its_declared_params(repo):
    reads = recorded_reads(repo.parent / "reads.jsonl")
    assert set(reads) == ALL_STAGES
    problems = params_mismatches(reads)
    assert not problems, "\n".join(problems)


def test_the_params_check_fails_on_a_broken_dvc_yaml(repo, monkeypatch):
    """Drop a key select@2 reads and add one it does not: both are reported."""
    real = declared_params

    def broken(stage_name: str) -> set[str]:
        keys = real(stage_name)
        return (keys - {"select.iteration_2.cap"}) | {"train.learning_rate"} if stage_name == "select@2" else keys

    monkeypatch.setattr(sys.modules[__name__], "declared_params", broken)
    [problem] = params_mismatches(recorded_reads(repo.parent / "reads.jsonl"))
    assert problem.startswith("select@2") and "select.iteration_2.cap" in problem and "train.learning_rate" in problem


def test_execution_settings_rerun_nothing(repo):
    def runtime(raw):
        raw["runtime"].update(save_steps=7, concurrency=3, token_budget=1234, gpu_memory_utilization=0.5)
        raw["runtime"].update(web_shard_size=5, augment_shard_size=3, score_shard_size=5, tensor_parallel_size=2)
        raw["runtime"]["launcher"].update(
            kind="torchrun", processes=2, nodes=4, node_rank=1, rendezvous="node1:29400", srun=True
        )
        raw["runtime"].update(cluster="ray")
        raw["runtime"]["ray"].update(address="head:6379", actors=8, num_cpus=4, num_gpus=1, threads=4, max_restarts=1)

    assert _with_params(repo, runtime) == set()


def test_selection_and_mix_changes_touch_only_the_stages_that_read_them(repo):
    def cap_2(raw):
        raw["select"]["iteration_2"]["cap"] = 3

    def threshold_1(raw):
        raw["select"]["iteration_1"]["threshold"] = -1e9

    def method_threshold(raw):
        raw["curate"]["threshold"][raw["curate"]["method"]] = 2.5

    def web_limit(raw):
        raw["data"]["web"]["limit"] = 10

    def mix(raw):
        raw["train"]["mix"] = "augmented"

    assert _with_params(repo, cap_2) == {"select@2"}
    assert _with_params(repo, threshold_1) == {"select@1"}
    assert _with_params(repo, method_threshold) == {
        "select@1",
        "select@2",
        *(f"curation_quality@{c}" for c in CURATORS),
    }
    assert _with_params(repo, web_limit) == {"sample_web"}
    assert _with_params(repo, mix) == {"train@m1", "train@m2"}  # never M0: it trains on seed pairs alone


def test_an_iteration_2_cap_reruns_only_what_follows_it(repo):
    path = repo / "params.yaml"
    original = path.read_text()
    raw = yaml.safe_load(original)
    raw["select"]["iteration_2"]["cap"] = 3
    path.write_text(yaml.safe_dump(raw))
    try:
        ran = _ran(_dvc("repro", cwd=repo))
    finally:
        path.write_text(original)
    assert ran == {
        "select@2",
        "train@m2",
        "respond@m2",
        "likelihood@m2",
        "evaluate",
        "report",
        "export_dataset",
        "export_model@m2",
    }
    _dvc("repro", cwd=repo)  # back to the recorded state for the tests after this one


def test_exp_show_has_a_readable_headline(repo):
    """Only the headline is a DVC metric: at most 40 columns in `dvc exp show`, scalar leaves only."""
    shown = json.loads(_dvc("metrics", "show", "--json", cwd=repo))
    files = next(iter(shown.values()))["data"]
    assert list(files) == ["metrics/headline.json"]

    def leaves(node) -> list:
        if isinstance(node, dict):
            return [leaf for value in node.values() for leaf in leaves(value)]
        return [node]

    values = leaves(files["metrics/headline.json"]["data"])
    assert 0 < len(values) <= 40
    assert all(v is None or isinstance(v, (int, float)) for v in values)  # DVC flattens dicts, not lists


def test_every_plot_renders(repo):
    shown = json.loads(_dvc("plots", "show", "--json", cwd=repo))
    assert not shown.get("errors"), shown["errors"]
    assert shown["data"] and all(shown["data"].values()), [k for k, v in shown["data"].items() if not v]


def test_plots_html_loads_nothing_remote(repo, tmp_path):
    """The offline template (configs/plots/offline.html, vega inlined): the page works with no network."""
    _dvc("plots", "show", "-o", str(tmp_path / "plots"), cwd=repo)
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "vegaEmbed" in html and "<svg" not in html[:200]
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=\s*[\"']?(https?:)?//", html)
    assert "cdn." not in html


def test_second_repro_is_a_noop(repo):
    out = _dvc("repro", cwd=repo)
    assert _ran(out) == set()
    assert "up to date" in _dvc("status", cwd=repo).lower()


def test_push_then_pull_in_fresh_clone_restores_outputs(repo, tmp_path):
    remote = tmp_path / "remote"
    _dvc("remote", "add", "-d", "local", str(remote), cwd=repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "run results"], repo)
    _dvc("push", cwd=repo)
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "models" / "m2").exists()
    _dvc("pull", cwd=clone)
    status = _dvc("status", cwd=clone)
    assert "up to date" in status.lower(), status
    for out in [
        "models/base",
        "models/m2",
        "data/augmented.jsonl",
        "data/curated/2/selected.jsonl",
        "data/responses/m2.json",
        "data/annotations.json",
        "data/export/dataset",
        "models/export/m2",
    ]:
        assert (clone / out).exists(), out


def doc_recipes() -> list[str]:
    """Every `dvc ...` line of a bash block in the README and docs/ (continuations joined)."""
    lines = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.DOTALL):
            block = re.sub(r"\\\n\s*", " ", block)
            lines += [re.split(r"\s+#\s", line)[0].strip() for line in block.splitlines() if line.startswith("dvc ")]
    return lines


def test_every_documented_dvc_recipe_runs(repo, tmp_path):
    """The README's and docs' recipes, on the tiny DAG: experiments are queued (so their -S syntax and keys are
    checked) but not run here (test_a_queued_sweep_runs_and_reads_out runs one), remotes point at a temporary
    folder, and lines with a placeholder (<exp>) or a cloud URL are skipped."""
    recipes = doc_recipes()
    assert any("--queue" in r for r in recipes) and any(r.startswith("dvc exp show") for r in recipes)
    ran = []
    for recipe in recipes:
        if "<" in recipe or "queue start" in recipe or "://" in recipe:
            continue
        if recipe.startswith("dvc exp run") and "--queue" not in recipe:
            recipe = recipe.replace("dvc exp run", "dvc exp run --queue", 1)
        if recipe.startswith("dvc remote add"):
            recipe = f"dvc remote add -f -d store {tmp_path / 'remote'}"
        _run(["bash", "-c", recipe.replace("dvc ", f"{sys.executable} -m dvc ", 1)], repo)
        ran.append(recipe)
    _dvc("queue", "remove", "--queued", cwd=repo)
    assert len(ran) >= 8, ran


def test_a_queued_sweep_runs_and_reads_out(repo, tmp_path):
    """Two points of the cap sweep through DVC's queue, then the comparison command on them."""
    import time

    _dvc("exp", "run", "--queue", "-S", "select.iteration_2.cap=1,2", cwd=repo)
    _dvc("queue", "start", "-j", "1", cwd=repo)
    deadline = time.monotonic() + 900
    while True:
        status = _dvc("queue", "status", cwd=repo)
        if "Queued" not in status and "Running" not in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(5)
    assert status.count("Success") >= 2, status
    out = tmp_path / "cap"
    _run(
        [
            sys.executable,
            "-m",
            "humpback.evaluation.experiments",
            "--x",
            "select.iteration_2.cap",
            "--metric",
            "likelihood.m2.loglik_other",
            "--out",
            str(out),
        ],
        repo,
    )
    table = (tmp_path / "cap.md").read_text()
    assert "| all | 1 |" in table and "| all | 2 |" in table and "α" in table
    assert (tmp_path / "cap.png").read_bytes()[:4] == b"\x89PNG"
