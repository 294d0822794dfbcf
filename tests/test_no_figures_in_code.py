"""No measured figure in the code's comments, docstrings or config comments: a timing, a speed-up, a memory
size or a share quoted there goes stale the day the code or the machine changes, and nobody re-measures a
comment. The figure lives in docs/ with its date and machine; the comment keeps one clause of reason and a link.

Scanned: comments and docstrings of every .py under humpback/, stages/ and configs/, and the comments of
params.yaml and configs/**/*.yaml. String literals that are not docstrings are output (report text, log lines)
and are not scanned."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNITS = r"(?:ms|us|µs|s|sec|seconds?|mins?|minutes?|hours?|h|KB|kB|KiB|MB|MiB|GB|GiB|TB)"
FIGURE = re.compile(
    r"\b\d+(?:[.,]\d+)*x\b(?!\d)"  # a speed-up: 2.2x (not a shape: 576x1536, nor arithmetic: 2 x 16)
    rf"|\b\d+(?:[.,]\d+)*\s?{UNITS}\b"  # a time or a size: 3.4 ms, 5.3 s, 400 MB
    r"|\d+(?:[.,]\d+)*\s?%"  # a share: ~40%
    r"|\d+(?:[.,]\d+)*\s?(?:tok/s|tokens/s|s/step|s/pair|it/s|GFLOP)"  # a rate
)
# Figures that are definitions, not measurements: (path, text the figure sits in, why it may stay).
ALLOWED = [
    ("", "95%", "the confidence level of every interval: a definition"),
    ("configs/runtime/", "80 GB", "the GPU model's memory, a hardware specification"),
    ("configs/runtime/", "80GB", "the GPU model's name (A100-80GB)"),
    ("configs/runtime/", "~85 GB", "a 7B checkpoint's size by arithmetic (float32 weights + Adam), for disk planning"),
    ("humpback/curation/devset.py", "~25-35%", "where truncated negatives are cut: what the code does"),
]


def _texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring line of a .py file, or every comment of a YAML file."""
    source = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return [
            (n, m.group(1)) for n, line in enumerate(source.splitlines(), 1) if (m := re.search(r"(?:^|\s)#(.*)", line))
        ]
    found = [
        (tok.start[0], tok.string)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                found += [(first.lineno + i, line) for i, line in enumerate(first.value.value.splitlines())]
    return found


def figures(path: Path) -> list[str]:
    """`path:line: [figure] text` for every measured figure in the file's comments, allow-list applied."""
    where = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    out = []
    for n, text in _texts(path):
        for m in FIGURE.finditer(text):
            if any(where.startswith(p) and m.group(0) in needle and needle in text for p, needle, _ in ALLOWED):
                continue
            out.append(f"{where}:{n}: [{m.group(0)}] {text.strip()}")
    return out


def scanned() -> list[Path]:
    return sorted(
        [
            *ROOT.glob("humpback/**/*.py"),
            *ROOT.glob("stages/*.py"),
            *ROOT.glob("configs/**/*.py"),
            ROOT / "params.yaml",
            *ROOT.glob("configs/**/*.yaml"),
        ]
    )


def test_no_measured_figure_in_code_comments():
    found = [line for path in scanned() for line in figures(path)]
    assert not found, "measured figures belong in docs/ (with date and machine):\n" + "\n".join(found)


def test_the_scan_finds_each_kind_of_figure_and_spares_definitions(tmp_path):
    code = tmp_path / "module.py"
    code.write_text(
        '"""Packing made a step 1.7-2.4x faster (313 -> 131 us a call)."""\n'
        "X = 1  # loads in ~1 s and a transient ~100 MB; pads ~40% of tokens at 80 tok/s\n"
        "def f():\n"
        '    """A 95% interval over a 576x1536 matmul, 2 x 16 processes."""\n'
        '    return "3.4 ms"  # a string literal is output, not a comment\n'
    )
    config = tmp_path / "params.yaml"
    config.write_text("a: 1   # 2x faster here\nb: '5 s'\n")
    found = [line.split("]")[0].split("[")[1] for line in figures(code) + figures(config)]
    assert sorted(found) == sorted(["2.4x", "131 us", "1 s", "100 MB", "40%", "80 tok/s", "2x"])


def test_every_allowed_figure_is_still_there():
    """An allow-list entry whose text left the code is removed with it, so the list stays short."""
    texts = {path.relative_to(ROOT).as_posix(): " ".join(t for _, t in _texts(path)) for path in scanned()}
    unused = [
        needle
        for prefix, needle, _ in ALLOWED
        if not any(k.startswith(prefix) and needle in t for k, t in texts.items())
    ]
    assert not unused, unused
