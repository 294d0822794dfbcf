"""dvc.yaml says exactly what each stage depends on, so `dvc repro` and `dvc exp run` rerun exactly what a change
touches. Code: each stage's declared project modules are the ones its file imports (statically, transitively;
tools/stage_deps.py). Params: the keys each stage reads while the tiny DAG runs are compared with its declared
params in tests/test_pipeline.py (the run is that module's)."""

from __future__ import annotations

import re

import yaml

from tools.stage_deps import NOT_CODE_DEPS, ROOT, code_deps, covered, import_cycles


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    stage = stage.get("do", stage)
    match = re.match(r"python -m stages\.(\w+)", stage["cmd"])
    assert match, f"a stage's cmd runs one stage module: {stage['cmd']}"
    return f"stages/{match.group(1)}.py"


def declared_code(stage: dict) -> list[str]:
    stage = stage.get("do", stage)
    return [d for d in stage.get("deps", []) if d.startswith(("humpback", "stages"))]


def test_every_stage_declares_exactly_the_modules_it_imports():
    problems = []
    for name, stage in stages().items():
        imported = code_deps(stage_module(stage))
        declared = declared_code(stage)
        missing = sorted(p for p in imported if not covered(p, declared))
        unused = sorted(d for d in declared if not any(covered(p, [d]) for p in imported))
        if missing or unused:
            problems.append(f"{name}: missing {missing}, not imported {unused}")
    assert not problems, "\n".join(problems)


def test_no_stage_imports_another_stage():
    for name, stage in stages().items():
        module = stage_module(stage)
        others = {p for p in code_deps(module) if p.startswith("stages/") and p != module}
        assert not others, f"{name} imports {others}: shared logic belongs in humpback/"


def test_the_exempt_modules_exist():
    """The list of modules no stage lists (they cannot change an output) names real files."""
    assert all((ROOT / p).is_file() for p in NOT_CODE_DEPS)


def test_a_broken_dvc_yaml_is_caught(tmp_path):
    """The check can fail: drop one module a stage imports and add one it does not."""
    stage = dict(stages()["select"]["do"])
    kept = [d for d in stage["deps"] if d != "humpback/curation/selection.py"]
    stage["deps"] = [*kept, "humpback/evaluation/judges.py"]
    imported = code_deps(stage_module(stage))
    declared = declared_code(stage)
    assert "humpback/curation/selection.py" in {p for p in imported if not covered(p, declared)}
    assert "humpback/evaluation/judges.py" in {d for d in declared if not any(covered(p, [d]) for p in imported)}


def test_the_library_has_no_import_cycle():
    assert import_cycles() == []


def test_the_cycle_check_finds_one(tmp_path, monkeypatch):
    import tools.stage_deps as deps

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg.a import x\n")
    monkeypatch.setattr(deps, "ROOT", tmp_path)
    monkeypatch.setattr(deps, "_imports", _imports_pkg)
    assert deps.import_cycles("pkg") == [["pkg/a.py", "pkg/b.py", "pkg/a.py"]]


def _imports_pkg(path):
    """`_imports` for the throwaway package `pkg` (the real one keeps to humpback/ and stages/)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return {n for n in names if n.startswith("pkg")}
