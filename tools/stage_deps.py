"""What each stage really depends on, found from the code: the project modules a stage file imports
(statically, transitively, lazy imports inside functions included) and the params keys it reads (recorded by
the stage runner while the DAG runs). tests/test_stage_deps.py compares both with dvc.yaml."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Modules that cannot change a stage's output given the same params and inputs, so no stage lists them:
# the params loader (it validates; the values are the params deps), record I/O (writes what it is given),
# the stage plumbing (arguments, logging, exit codes), the train stage's process launcher (runtime.launcher).
NOT_CODE_DEPS = {
    "humpback/__init__.py",
    "humpback/params.py",
    "humpback/storage/records.py",
    "humpback/stage_runner.py",
    "humpback/training/launch.py",
}


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Every project module named by an import anywhere in `path` (and the packages on the way)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # `from humpback import scoring`
    out = set()
    for name in names:
        parts = name.split(".")
        if parts[0] not in ("humpback", "stages"):
            continue
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            out.add(".".join(parts[:i]))
    return out


def code_deps(stage_file: str) -> set[str]:
    """Repo-relative files of the project modules `stage_file` runs, transitively, minus NOT_CODE_DEPS."""
    seen: set[str] = set()
    todo = [ROOT / stage_file]
    while todo:
        path = todo.pop()
        rel = path.relative_to(ROOT).as_posix()
        if rel in seen:
            continue
        seen.add(rel)
        if rel in NOT_CODE_DEPS:
            continue  # not followed either: what they import is reached, if at all, through real deps
        for name in _imports(path):
            found = _module_file(name)
            if found is not None:
                todo.append(found)
    return {p for p in seen if p not in NOT_CODE_DEPS and not _only_names(ROOT / p)}


def _only_names(path: Path) -> bool:
    """A package's `__init__.py` that holds nothing but its docstring: it names the package and runs nothing."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and all(
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body
    )


def covered(path: str, declared: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in declared)


def minimal_deps(files: set[str]) -> list[str]:
    """The files, with a package folder named once when every module in it is a dependency."""
    out = set(files)
    # outermost first: a package whose every module (its subpackages' too) is a dependency is named once
    inits = (ROOT / "humpback").rglob("__init__.py")
    packages = sorted((init.parent for init in inits if init.parent.name != "humpback"), key=lambda f: len(f.parts))
    for folder in packages:
        members = {p.relative_to(ROOT).as_posix() for p in folder.rglob("*.py") if not _only_names(p)}
        if members and members <= out:
            out = (out - members) | {folder.relative_to(ROOT).as_posix()}
    return sorted(out, key=lambda p: (not p.startswith("stages/"), p))


def import_cycles(package: str = "humpback") -> list[list[str]]:
    """Cycles in the import graph of the library's modules (package __init__ files left out: they only name)."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        targets = {_module_file(name) for name in _imports(path)}
        graph[rel] = {
            t.relative_to(ROOT).as_posix() for t in targets if t is not None and t.name != "__init__.py" and t != path
        }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def rewrite_dvc_yaml(path: Path = ROOT / "dvc.yaml") -> None:
    """Set every stage's code deps to what its module imports (data deps kept; comments and layout kept)."""
    import io
    import re

    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.width = 4096
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    tree = yaml.load(path.read_text())
    for stage in tree["stages"].values():
        body = stage.get("do", stage)
        module = re.match(r"python -m stages\.(\w+)", body["cmd"]).group(1)
        data = [d for d in body["deps"] if not str(d).startswith(("humpback", "stages"))]
        body["deps"].clear()
        body["deps"].extend(minimal_deps(code_deps(f"stages/{module}.py")) + data)
    text = io.StringIO()
    yaml.dump(tree, text)
    path.write_text(text.getvalue())


if __name__ == "__main__":  # python -m tools.stage_deps: refresh dvc.yaml's code deps after moving code
    rewrite_dvc_yaml()
