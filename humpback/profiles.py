"""Profiles: named sets of params, one switch for `dvc repro` and `dvc exp run` alike.

A profile is a file of overrides, `configs/profiles/<name>.yaml`, merged into params.yaml in place (comments
kept), then validated by the params loader:

    python -m humpback.profiles paper      # or: make profile PROFILE=paper
    dvc repro                              # or: dvc exp run -S ... on top of it

`default` holds the shipped value of every key another profile sets, so switching back is the same command.
The result is an ordinary params.yaml: DVC sees exactly which keys changed and reruns exactly those stages.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from humpback.params import DEFAULT_PARAMS_FILE, ParamsError, parse_params

PROFILES_DIR = Path(__file__).resolve().parents[1] / "configs" / "profiles"


def available() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def overrides(name: str) -> dict[str, Any]:
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ParamsError(f"no profile '{name}' (available: {', '.join(available())})")
    return YAML(typ="safe").load(path.read_text()) or {}


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
    yaml = YAML()  # round-trip: the file's comments and order survive
    yaml.width = 4096
    path = Path(params_file)
    tree = yaml.load(path.read_text())
    before = leaf_keys(YAML(typ="safe").load(path.read_text()))
    merge(tree, overrides(name))
    from io import StringIO

    text = StringIO()
    yaml.dump(tree, text)
    parse_params(YAML(typ="safe").load(text.getvalue()), source=f"{path} with profile {name}")
    path.write_text(text.getvalue())
    after = leaf_keys(YAML(typ="safe").load(path.read_text()))
    return sorted(k for k in after if after[k] != before.get(k))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Merge a profile (configs/profiles/NAME.yaml) into params.yaml.")
    parser.add_argument("profile", help=f"one of: {', '.join(available())}")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE)
    args = parser.parse_args(argv)
    try:
        changed = apply(args.profile, args.params)
    except ParamsError as exc:
        print(f"profiles: error: {exc}", file=sys.stderr)
        return 1
    print(f"profiles: {args.profile} applied to {args.params}; changed: {', '.join(changed) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
