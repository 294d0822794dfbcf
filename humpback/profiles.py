"""Profiles: named sets of params, one switch for `dvc repro` and `dvc exp run` alike.

A profile is a file of overrides, `configs/profiles/<name>.yaml`, merged into params.yaml in place (comments
kept), then validated by the params loader:

    python -m humpback.profiles paper      # or: make profile PROFILE=paper
    dvc repro                              # or: dvc exp run -S ... on top of it

`default` holds the shipped value of every key another profile sets, so switching back is the same command.
The result is an ordinary params.yaml: DVC sees exactly which keys changed and reruns exactly those stages.

A runtime file, `configs/runtime/<name>.yaml`, is merged the same way but may set `runtime.*` only: how the
work runs on a machine (launcher, shards, checkpoints, vLLM's GPUs), which no stage depends on, so applying one
reruns nothing and changes no figure:

    python -m humpback.profiles --runtime node-8gpu   # or: make runtime RUNTIME=node-8gpu
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import PlainScalarString
from ruamel.yaml.tokens import CommentToken

from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, parse_params

PROFILES_DIR = Path(__file__).resolve().parents[1] / "configs" / "profiles"
RUNTIME_DIR = Path(__file__).resolve().parents[1] / "configs" / "runtime"
# The one params section no stage lists in dvc.yaml (params.RuntimeParams): a runtime file may set nothing else.
RUNTIME_SECTION = "runtime"


def available(folder: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (folder or PROFILES_DIR).glob("*.yaml"))


def overrides(name: str, folder: Path | None = None) -> dict[str, Any]:
    folder = folder or PROFILES_DIR
    kind = "runtime file" if folder == RUNTIME_DIR else "profile"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise ParamsError(f"no {kind} '{name}' (available: {', '.join(available(folder))})")
    return YAML(typ="safe").load(path.read_text()) or {}


def runtime_overrides(name: str) -> dict[str, Any]:
    """A runtime file's settings, refused when it sets anything outside `runtime.*`: those are tracked params,
    and a machine's file that changed one would change what the run computes."""
    changes = overrides(name, RUNTIME_DIR)
    outside = sorted(k for k in leaf_keys(changes) if not k.startswith(RUNTIME_SECTION + "."))
    if outside:
        raise ParamsError(
            f"runtime file '{name}' sets '{outside[0]}': a runtime file sets runtime.* only "
            "(what is computed belongs in a profile, configs/profiles/)"
        )
    return changes


def leaf_keys(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a nested mapping's leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(leaf_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def merge(params: dict[str, Any], changes: dict[str, Any], where: str = "", lines: list[str] | None = None) -> None:
    """Set every leaf of `changes` in `params` (in place); a key params.yaml does not have is an error.

    With ruamel's round-trip objects (and the file's `lines`), a switch back restores the file byte for byte: a
    leaf already equal keeps its text (`1.0e-3` stays `1.0e-3`), a value keeps the style it was written in, and
    an end-of-line comment that a longer value pushed right goes back to its siblings' column."""
    for key, value in changes.items():
        if key not in params:
            raise ParamsError(f"profile sets '{where}{key}', which params.yaml does not have")
        if isinstance(value, dict):
            merge(params[key], value, f"{where}{key}.", lines)
        elif not (params[key] == value and type(params[key]) is not bool and type(value) is not bool):
            if type(value) is str:  # ruamel would otherwise give it the replaced value's quotes
                value = PlainScalarString(value)
            params[key] = value
            if lines is not None:
                _realign_comment(params, key, lines)


def _realign_comment(mapping: Any, key: str, lines: list[str]) -> None:
    """The dumper writes a comment that no longer fits its column one space after the value; params.yaml's own
    comments never sit there, so such a comment goes back to the column its siblings share."""
    items = getattr(getattr(mapping, "ca", None), "items", {})
    tokens = {k: e[2] for k, e in items.items() if len(e) > 2 and isinstance(e[2], CommentToken)}
    mine = tokens.get(key)
    if mine is None or mine.start_mark is None or mine.start_mark.line >= len(lines):
        return
    line, col = lines[mine.start_mark.line], mine.column
    columns = [t.column for k, t in tokens.items() if k != key]
    if columns and col >= 2 and line[col - 1 : col] == " " and line[col - 2 : col - 1] != " ":
        mine.column = max(set(columns), key=columns.count)


def apply(name: str, params_file: str | Path = DEFAULT_PARAMS_FILE) -> list[str]:
    """Merge profile `name` into `params_file`; return the keys whose value changed."""
    overrides(name)  # the error naming the available profiles
    return _merge_file(_round_trip(PROFILES_DIR / f"{name}.yaml"), f"profile {name}", params_file)


def apply_runtime(name: str, params_file: str | Path = DEFAULT_PARAMS_FILE) -> list[str]:
    """Merge runtime file `name` (configs/runtime/) into `params_file`; return the keys whose value changed."""
    runtime_overrides(name)  # refuses a file that sets anything outside runtime.*
    return _merge_file(_round_trip(RUNTIME_DIR / f"{name}.yaml"), f"runtime file {name}", params_file)


def _round_trip(path: Path) -> dict[str, Any]:
    """A settings file as ruamel's round-trip loader reads it: each value keeps its written form (quotes, `1.0e-3`)
    when merged into params.yaml."""
    yaml = YAML()
    yaml.preserve_quotes = True
    return yaml.load(path.read_text()) or {}


def _merge_file(changes: dict[str, Any], label: str, params_file: str | Path) -> list[str]:
    """Merge `changes` into `params_file` keeping its comments, validate, write; the keys whose value changed."""
    yaml = YAML()  # round-trip: the file's comments, order and quoting survive
    yaml.preserve_quotes = True
    yaml.width = 4096
    path = Path(params_file)
    tree = yaml.load(path.read_text())
    before = leaf_keys(YAML(typ="safe").load(path.read_text()))
    merge(tree, changes, lines=path.read_text().splitlines())
    from io import StringIO

    text = StringIO()
    yaml.dump(tree, text)
    parse_params(YAML(typ="safe").load(text.getvalue()), source=f"{path} with {label}")
    path.write_text(text.getvalue())
    after = leaf_keys(YAML(typ="safe").load(path.read_text()))
    return sorted(k for k in after if after[k] != before.get(k))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Merge a profile (configs/profiles/NAME.yaml) and/or a runtime "
        "file (configs/runtime/NAME.yaml) into params.yaml."
    )
    parser.add_argument("profile", nargs="?", help=f"one of: {', '.join(available())}")
    parser.add_argument("--runtime", help=f"one of: {', '.join(available(RUNTIME_DIR))} (runtime.* only)")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = parser.parse_args(argv)
    if not args.profile and not args.runtime:
        parser.error("name a profile, --runtime NAME, or both")
    try:
        for label, name, merge_one in (("profile", args.profile, apply), ("runtime file", args.runtime, apply_runtime)):
            if name:
                changed = merge_one(name, args.params)
                print(f"profiles: {label} {name} applied to {args.params}; changed: {', '.join(changed) or 'nothing'}")
    except ParamsError as exc:
        print(f"profiles: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
