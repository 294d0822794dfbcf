"""The one place for the project's working folders under `.humpback/` (git- and dvc-ignored, beside dvc.yaml):
scratch for resumable work (deleted when a stage finishes) and caches that outlive a stage. No stage output
ever lives here.

Scratch belongs to the workspace a stage runs in. Caches belong to the repository: `dvc exp run --queue` runs
each experiment in a temporary workspace (a fresh checkout under `<repo>/.dvc/tmp/exps/`, removed afterwards),
and a git worktree is a second workspace of the same repository; both read and add to the caches of the
repository's main workspace, so what one queued run judged or hashed the next one and the workspace reuse.
`HUMPBACK_CACHE=<folder>` puts them anywhere else (a disk shared by machines). Two queue workers may share
them at once: every cache file is written whole and atomically, and files rewritten whole are merged under a
lock (`merge_json`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from filelock import FileLock

from humpback.storage.records import write_json

HUMPBACK_DIR = Path(".humpback")
SCRATCH_DIR = HUMPBACK_DIR / "scratch"  # shards, checkpoints, assembled downloads of a running stage
TRAIN_SCRATCH = SCRATCH_DIR / "train"  # training checkpoints, per role and fingerprint
CACHE_ENV = "HUMPBACK_CACHE"
DVC_TEMP_WORKSPACES = (".dvc", "tmp", "exps")  # where DVC's queue makes its temporary workspaces


def main_workspace(workspace: str | Path = ".") -> Path:
    """The repository's main workspace for `workspace` (a stage's working directory): itself, unless it is one
    of DVC's temporary experiment workspaces (`<repo>/.dvc/tmp/exps/[celery/]tmpXXXX`) or a git worktree."""
    here = Path(workspace).resolve()
    parts, n = here.parts, len(DVC_TEMP_WORKSPACES)
    for i in range(1, len(parts) - n):
        if parts[i : i + n] == DVC_TEMP_WORKSPACES:
            return Path(*parts[:i])
    return _worktree_main(here) or here


def _worktree_main(here: Path) -> Path | None:
    """The main worktree's counterpart of `here` when `here` is in a linked git worktree (git's own answer:
    its git dir differs from the common one), else None."""
    if not (here / ".git").is_file():  # a linked worktree's root has a `.git` file; a clone's is a folder
        return None
    try:
        git_dir, common_dir, top = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-dir", "--git-common-dir", "--show-toplevel"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if Path(git_dir) == Path(common_dir) or Path(common_dir).name != ".git":
        return None
    return Path(common_dir).parent / here.relative_to(Path(top).resolve())


def cache_root() -> Path:
    """The folder of the caches that outlive a stage: $HUMPBACK_CACHE, else `.humpback/cache` of the main
    workspace of the directory the stage runs in (module docstring). Resolved at each call, from the current
    directory, since that is where DVC starts a stage."""
    if folder := os.environ.get(CACHE_ENV):
        return Path(folder)
    return main_workspace() / HUMPBACK_DIR / "cache"


def judge_cache() -> Path:
    """Judgements, one folder per judge id."""
    return cache_root() / "judge"


def hash_cache() -> Path:
    """sha256 of fingerprinted files (model weights), one small file per file identity (storage.hashing.hash_file)."""
    return cache_root() / "hash"


def cache_lock(path: str | Path) -> FileLock:
    """The lock beside a cache file that is read and rewritten whole, held by whoever reads or writes it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{path}.lock")


def merge_json(path: str | Path, entries: dict[str, Any]) -> dict[str, Any]:
    """Add `entries` to the JSON object cached in `path` and return the whole object, others' entries included:
    read, updated and written (atomically) under the file's lock, so two processes adding entries at the same
    time keep both (a plain rewrite would keep only the last writer's)."""
    path = Path(path)
    with cache_lock(path):
        cached = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        cached.update(entries)
        write_json(path, cached)
    return cached
