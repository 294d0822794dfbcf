"""docs/CONTRACTS.md maps each step of the method and each concept to the one module that holds it: every module
under humpback/ is listed there exactly once, and nothing listed is missing from the tree, so the map cannot go
stale after a rename, a split or a new module.

Exempt: a package `__init__.py` holding only its docstring (it names the package; there is no code to place).
An `__init__.py` with code (a registry, a version) is a module like any other and is listed."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "docs" / "CONTRACTS.md"
MAP_HEADING = "## Where each step and concept lives: one module each"


def docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)


def modules() -> set[str]:
    """Every module under humpback/ that the map must list."""
    return {
        p.relative_to(ROOT).as_posix()
        for p in ROOT.glob("humpback/**/*.py")
        if not (p.name == "__init__.py" and docstring_only(p))
    }


def listed(text: str) -> Counter[str]:
    """How often each module appears in the map section's module column."""
    section = text.split(MAP_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return Counter(m for row in rows for m in re.findall(r"`(humpback/[\w/]+\.py)`", row.rsplit("|", 2)[-2]))


def test_every_module_is_listed_once_in_the_contracts_map():
    text = CONTRACTS.read_text(encoding="utf-8")
    assert MAP_HEADING in text
    counts = listed(text)
    missing = sorted(modules() - set(counts))
    twice = sorted(m for m, n in counts.items() if n > 1)
    gone = sorted(set(counts) - modules())
    assert not (missing or twice or gone), f"not listed: {missing}; listed twice: {twice}; not in the tree: {gone}"


def test_the_map_reader_counts_the_module_column_only(tmp_path):
    text = (
        f"# x\n{MAP_HEADING}\n\n| concept | module |\n|---|---|\n"
        "| the loader (`humpback/a.py` is not this row's module) | `humpback/b.py` |\n"
        "| a group | |\n| twice | `humpback/b.py` |\n\n## Next\n| later | `humpback/c.py` |\n"
    )
    assert listed(text) == Counter({"humpback/b.py": 2})
    empty = tmp_path / "__init__.py"
    empty.write_text('"""A package."""\n')
    code = tmp_path / "registry.py"
    code.write_text('"""A registry."""\n\nNAMES = {}\n')
    assert docstring_only(empty) and not docstring_only(code)


def test_the_readme_stays_an_entry_point():
    """The README is the entry point (what, two commands, the DAG, params, DVC, data, scale, the layout) and links
    to docs/ for depth; past 150 lines it has started to hold what belongs in a docs page."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert "docs/CONTRACTS.md" in readme and "docs/params.md" in readme
