"""Every params key the README and docs/*.md name exists in params.yaml, and a key that moved fails with its new
place: in prose (inline code), YAML snippets, `-S` lines and `--x`/`--by` arguments.

A dotted name is a params key when its first segment is a top-level params.yaml section. Not keys: file names
(`evaluate.json`), calls (`generation.stage_settings(...)`), and a stage's per-item metrics (`likelihood.m2.
loglik_other`: `likelihood` is both a section and a foreach stage of dvc.yaml, `m2` one of its items). `*`, `<x>`
and capitals (`iteration_N`) are placeholders: such a name must match some key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from humpback.params import MOVED

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FILE_SUFFIXES = {
    "py",
    "json",
    "jsonl",
    "md",
    "yaml",
    "yml",
    "toml",
    "tsv",
    "csv",
    "png",
    "txt",
    "gz",
    "html",
    "rst",
    "lock",
    "cfg",
    "sh",
    "bin",
    "gguf",
}
SEGMENT = r"(?:[A-Za-z0-9_]+|\*|<[^>\s]+>)"
NAME = re.compile(rf"(?<![\w./\-:<])([a-z_][a-z0-9_]*(?:\.{SEGMENT})+)(?![\w(/\-])")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _paths(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= _paths(value, f"{prefix}{key}.")
    return out


PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
KEYS = _paths(PARAMS)
# foreach stages' items: `likelihood.m2...` names the likelihood stage's output for m2, not a param.
STAGE_ITEMS = {
    name: set(stage["foreach"])
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()
    if "foreach" in stage
}


def _is_placeholder(segment: str) -> bool:
    return segment == "*" or segment.startswith("<") or segment != segment.lower()


def _matches(name: str) -> bool:
    """Whether some params.yaml key is `name`, placeholders filled in."""
    pattern = r"\.".join(
        r"[^.]+" if p == "*" or p.startswith("<") else re.sub(r"[A-Z]+", "[^.]+", re.escape(p)) for p in name.split(".")
    )
    return any(re.fullmatch(pattern, key) for key in KEYS)


def is_params_claim(name: str, call: bool = False) -> bool:
    parts = name.split(".")
    if call or parts[0] not in PARAMS or parts[-1] in FILE_SUFFIXES:
        return False
    # `likelihood.m2.loglik_other`, `likelihood.<model>.<instrument>`: a stage item's metric, not a key
    return not (
        parts[0] in STAGE_ITEMS
        and (parts[1] in STAGE_ITEMS[parts[0]] or (_is_placeholder(parts[1]) and not _matches(name)))
    )


# Mappings whose keys are the user's, not params keys (runtime.servers: DVC stage instance -> server URLs).
FREE_MAPPINGS = ("runtime.servers.",)


def problem(name: str, line: str) -> str | None:
    """Why `name` (read on `line`) is not a params.yaml key; None if it is."""
    if name.startswith(FREE_MAPPINGS):
        return None
    if name in MOVED:
        if any(new in line for new in NAME.findall(MOVED[name])):  # a history note: "x replaces y"
            return None
        return f"'{name}' has moved to {MOVED[name]}"
    if any(_is_placeholder(p) for p in name.split(".")):
        return None if _matches(name) else f"'{name}' matches no params.yaml key"
    return None if name in KEYS else f"'{name}' is not a params.yaml key"


def _names(text: str) -> list[str]:
    return [
        m.group(1) for m in NAME.finditer(text) if is_params_claim(m.group(1), call=text[m.end() : m.end() + 1] == "(")
    ]


def named_keys(page: Path) -> list[tuple[str, int, str, str]]:
    """(name, line number, line, where) for every params key the page names."""
    text = page.read_text()
    lines = text.splitlines()
    found = []
    prose = text
    for fence in FENCE.finditer(text):
        prose = prose.replace(fence.group(0), "\n" * fence.group(0).count("\n"))
        first = text[: fence.start(2)].count("\n")
        body = fence.group(2)
        if fence.group(1) == "yaml":
            tree = yaml.safe_load(re.sub(r",\s*\.\.\.", "", body))
            for key in sorted(_paths(tree)):
                if key.split(".")[0] in PARAMS:
                    field = re.compile(rf"(^|[\s{{,]){re.escape(key.split('.')[-1])}\s*:")
                    row = next((i for i, line in enumerate(body.splitlines()) if field.search(line)), 0)
                    found.append((key, first + row + 1, lines[first + row], "yaml"))
        for i, line in enumerate(body.splitlines()):  # shell lines: -S keys, --x/--by arguments, comments
            found += [(name, first + i + 1, line, "code") for name in _names(line)]
    for i, line in enumerate(prose.splitlines()):
        for span in INLINE_CODE.findall(line):
            found += [(name, i + 1, line, "prose") for name in _names(span)]
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_params_key_a_page_names_exists(page):
    problems = [
        f"{page.name}:{n} ({where}): {why}" for name, n, line, where in named_keys(page) if (why := problem(name, line))
    ]
    assert not problems, "\n".join(problems)


def test_the_check_reads_each_kind_of_mention_and_names_a_moved_key(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Set `train.max_steps: 0` and `curate.treshold`; read `likelihood.m2.loglik_other`, "
        "`selected.iteration_2`, `generation.stage_settings(...)`, `evaluate.json`.\n"
        "```bash\ndvc exp run --queue -S 'select.iteration_2.caps=4,8' -S \"train.mix=augmented\"\n"
        "python -m humpback.evaluation.experiments --by curate.methd --out sweeps/x\n```\n"
        "```yaml\ndata:\n  web: {source: warc, limits: 0, ...}\n```\n"
    )
    problems = {name: problem(name, line) for name, _, line, _ in named_keys(page)}
    assert set(problems) == {
        "train.max_steps",
        "curate.treshold",
        "select.iteration_2.caps",
        "train.mix",
        "curate.methd",
        "data",
        "data.web",
        "data.web.source",
        "data.web.limits",
    }
    assert "moved to train.epochs" in problems["train.max_steps"]
    assert {k for k, why in problems.items() if why} == {
        "train.max_steps",
        "curate.treshold",
        "select.iteration_2.caps",
        "curate.methd",
        "data.web.limits",
    }
    # A history note that names the new place beside the old is not a stale instruction.
    assert problem("train.max_steps", "`train.epochs` replaces `train.max_steps`") is None
    assert problem("data.*.source", "") is None and problem("select.iteration_N.cap", "") is None
