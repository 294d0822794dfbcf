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
        raise ParamsError(f"runtime file '{name}' sets '{outside[0]}': a runtime file sets runtime.* only "
                          "(what is computed belongs in a profile, configs/profiles/)")
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


def merge(params: dict[str, Any], changes: dict[str, Any], where: str = "") -> None:
    """Set every leaf of `changes` in `params` (in place); a key params.yaml does not have is an error."""
    for key, value in changes.items():
        if key not in params:
            raise ParamsError(f"profile sets '{where}{key}', which params.yaml does not have")
        if isinstance(value, dict):
            merge(params[key], value, f"{where}{key}.")
        else:
            params[key] = value


def apply(name: str, params_file: str | Path = DEFAULT_PARAMS_FILE) -> list[str]:
    """Merge profile `name` into `params_file`; return the keys whose value changed."""
    return _merge_file(overrides(name), f"profile {name}", params_file)


def apply_runtime(name: str, params_file: str | Path = DEFAULT_PARAMS_FILE) -> list[str]:
    """Merge runtime file `name` (configs/runtime/) into `params_file`; return the keys whose value changed."""
    return _merge_file(runtime_overrides(name), f"runtime file {name}", params_file)


def _merge_file(changes: dict[str, Any], label: str, params_file: str | Path) -> list[str]:
    """Merge `changes` into `params_file` keeping its comments, validate, write; the keys whose value changed."""
    yaml = YAML()  # round-trip: the file's comments and order survive
    yaml.width = 4096
    path = Path(params_file)
    tree = yaml.load(path.read_text())
    before = leaf_keys(YAML(typ="safe").load(path.read_text()))
    merge(tree, changes)
    from io import StringIO

    text = StringIO()
    yaml.dump(tree, text)
    parse_params(YAML(typ="safe").load(text.getvalue()), source=f"{path} with {label}")
    path.write_text(text.getvalue())
    after = leaf_keys(YAML(typ="safe").load(path.read_text()))
    return sorted(k for k in after if after[k] != before.get(k))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Merge a profile (configs/profiles/NAME.yaml) and/or a runtime "
                                                 "file (configs/runtime/NAME.yaml) into params.yaml.")
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
