"""What the code imports is what pyproject.toml declares, and the locks (`make lock`) hold what it declares.

Imports are read statically (ast) from every module, so a package imported only on a path the tests do not
run (the OpenAI engine, a benchmark) still counts. A module maps to its distribution through
`importlib.metadata.packages_distributions()`; an optional GPU package that is not installed here (vLLM)
maps by its own name, and its import must be guarded by `except ImportError` (DeepSpeed, in dev too, is
installed everywhere: the tests run it on CPUs).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
LOCAL = {"humpback", "stages", "benchmarks", "tests", "tools"}
# Where each folder's imports may be declared: unguarded / guarded by `except ImportError` (optional).
# `cluster` (Ray) is optional for the library; `make test` installs it beside the dev set-up.
ALLOWED = {
    "humpback": (("runtime",), ("runtime", "gpu", "cluster")),
    "stages": (("runtime",), ("runtime", "gpu", "cluster")),
    "benchmarks": (("runtime", "dev", "cluster"), ("runtime", "dev", "gpu", "cluster")),  # run from the dev set-up
    "tests": (("runtime", "dev", "cluster"), ("runtime", "dev", "gpu", "cluster")),
}
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}
# What PyPI's CUDA torch brings (cuda-*, nvidia-* libraries, triton); nvidia-ml-py is NVML's Python binding
# (dvclive's system metrics), no CUDA.
CUDA_PACKAGE = re.compile(r"^(cuda-|nvidia-(?!ml-py$)|triton$)")
# Packages whose internals the code reads (pyproject.toml's upper bounds): the tests must run on the locked ones.
INTERNALS_READ = ("torch", "transformers", "peft", "accelerate")


def requirements(*groups: str) -> dict[str, Requirement]:
    """{canonical name: requirement} of the runtime dependencies and/or extras, for this interpreter."""
    reqs: dict[str, Requirement] = {}
    for group in groups:
        lines = PROJECT["dependencies"] if group == "runtime" else PROJECT["optional-dependencies"][group]
        for req in map(Requirement, lines):
            if req.marker is None or req.marker.evaluate({"extra": group}):
                reqs[canonicalize_name(req.name)] = req
    return reqs


def lock(name: str) -> dict[str, str]:
    lines = (REPO / "requirements" / name).read_text().splitlines()
    return {canonicalize_name(n): v for n, v in (line.split("==") for line in lines if line and line[0] != "#")}


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in IMPORT_ERRORS for t in types)


def imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(top-level module, guarded) for each absolute import in a file, and each `find_spec("name")` probe
    (guarded: it asks whether an optional package is there)."""
    tree = ast.parse(path.read_text(), str(path))
    guarded = {
        id(n)
        for t in ast.walk(tree)
        if isinstance(t, ast.Try) and any(map(_catches_import_error, t.handlers))
        for stmt in t.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "find_spec"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value.split(".")[0], True
            continue
        else:
            continue
        for name in names:
            yield name.split(".")[0], id(node) in guarded


def third_party_imports() -> Iterator[tuple[str, str, bool, str]]:
    """(folder, top-level module, guarded, file) of every import of a module from outside the project."""
    for folder in ALLOWED:
        for path in sorted((REPO / folder).rglob("*.py")):
            for module, guarded in imports(path):
                if module not in LOCAL and module not in sys.stdlib_module_names:
                    yield folder, module, guarded, str(path.relative_to(REPO))


def test_every_imported_package_is_declared():
    distributions = importlib.metadata.packages_distributions()
    undeclared = set()
    for folder, module, guarded, where in third_party_imports():
        groups = ALLOWED[folder][guarded]
        declared = {name for group in groups for name in requirements(group)}
        # Not installed here (an optional GPU package): its distribution by the module's own name.
        names = {canonicalize_name(d) for d in distributions.get(module, [module])}
        if not names & declared:
            undeclared.add(f"{where}: `{module}` ({', '.join(sorted(names))}) is not in {' or '.join(groups)}")
    assert not undeclared, "\n".join(sorted(undeclared))


def test_gpu_packages_are_imported_only_behind_a_guard():
    # GPU-only: in the gpu extra and not in dev (deepspeed is in both: the tests run it on CPUs).
    gpu = set(requirements("gpu")) - set(requirements("dev"))
    unguarded = {
        where for _, module, guarded, where in third_party_imports() if canonicalize_name(module) in gpu and not guarded
    }
    assert not unguarded, f"a GPU-only package imported without `except ImportError`: {sorted(unguarded)}"


@pytest.mark.parametrize(
    ("names", "groups"),
    [
        (("cpu.lock",), ("runtime", "dev")),
        (("cpu.lock", "cluster.lock"), ("runtime", "dev", "cluster")),
        (("gpu.lock",), ("runtime", "dev", "gpu", "cluster")),
    ],
)
def test_lock_holds_what_pyproject_declares(names, groups):
    """A dependency added or re-bounded in pyproject.toml without `make lock` fails here (and in setup's
    pip check). cluster.lock is what the cluster extra adds to cpu.lock: the two never pin a package twice."""
    pins: dict[str, str] = {}
    for name in names:
        assert not set(pins) & set(lock(name)), f"{name} pins again what {names[0]} pins"
        pins.update(lock(name))
    name = " + ".join(names)
    stale = [
        f"{req} (locked: {pins.get(key, 'absent')})"
        for key, req in requirements(*groups).items()
        if key not in pins or not req.specifier.contains(pins[key], prereleases=True)
    ]
    assert not stale, f"requirements/{name} is stale, run `make lock`: {stale}"


def test_cpu_lock_keeps_torch_the_cpu_wheel():
    cpu, gpu = lock("cpu.lock"), lock("gpu.lock")
    assert cpu["torch"].endswith("+cpu") and not gpu["torch"].endswith("+cpu")
    assert not [n for n in cpu if CUDA_PACKAGE.match(n)]
    assert [n for n in gpu if CUDA_PACKAGE.match(n)]  # the pattern does find what a CUDA torch brings


def test_tests_run_on_the_locked_versions_of_the_packages_whose_internals_we_read():
    pins = lock("cpu.lock")
    installed = {name: importlib.metadata.version(name) for name in INTERNALS_READ}
    assert installed == {name: pins[name] for name in INTERNALS_READ}
