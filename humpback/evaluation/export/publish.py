"""Publish an exported folder (export_dataset's or export_model@<model>'s) to the Hugging Face Hub:

    python -m humpback.evaluation.export.publish data/export/dataset --repo-id OWNER/NAME [--private] [--dry-run]
    python -m humpback.evaluation.export.publish models/export/m2 --repo-id OWNER/NAME

The export stages already lay the folder out as the Hub reads it; this command decides the exact files it uploads
(every file but hidden ones), checks them (a card that parses, a model without adapter files, no secret from the
environment anywhere in them), prints the list, and calls `HfApi.upload_folder` with exactly those files. The
token is huggingface_hub's own business (`HF_TOKEN` or `hf auth login`): this code never reads or writes it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from huggingface_hub import DatasetCard, HfApi, ModelCard

RepoType = Literal["model", "dataset"]
# Environment variables whose values must never leave the machine: tokens, keys, passwords.
SECRET_NAME = re.compile(r"(TOKEN|API_KEY|SECRET|PASSWORD|ACCESS_KEY)", re.IGNORECASE)
MIN_SECRET_CHARS = 8  # shorter values ("1", "true") would match anywhere and are no credentials


class PublishError(ValueError):
    """A folder that is not ready to publish."""


def files_to_upload(folder: str | Path) -> list[str]:
    """Every file under `folder`, relative, hidden ones (and those in hidden folders) left out."""
    root = Path(folder)
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def repo_type_of(files: list[str]) -> RepoType:
    if "config.json" in files:
        return "model"
    if any(f.endswith(".parquet") for f in files):
        return "dataset"
    raise PublishError(
        "neither a model folder (config.json) nor a dataset folder (Parquet files): publish a folder "
        "the export stages wrote (data/export/dataset, models/export/<model>)"
    )


def secret_values(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """{variable: value} of the environment's secrets (by name)."""
    return {k: v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_CHARS}


def files_holding(folder: str | Path, files: list[str], secrets: Mapping[str, str]) -> list[tuple[str, str]]:
    """(file, variable) for every secret value found in a file, read in chunks that overlap by a secret's length."""
    needles = {name: value.encode() for name, value in secrets.items()}
    overlap = max((len(v) for v in needles.values()), default=0)
    found = []
    for rel in files:
        with (Path(folder) / rel).open("rb") as f:
            tail = b""
            hits: set[str] = set()
            while chunk := f.read(1 << 24):
                window = tail + chunk
                hits |= {name for name, value in needles.items() if value in window}
                tail = window[-overlap:] if overlap else b""
        found += [(rel, name) for name in sorted(hits)]
    return found


def check_folder(folder: str | Path, environ: Mapping[str, str] = os.environ) -> tuple[RepoType, list[str]]:
    """The repo type and the exact files to upload; raise PublishError for a folder that must not go out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{folder}: no such folder")
    files = files_to_upload(folder)
    repo_type = repo_type_of(files)
    if "README.md" not in files:
        raise PublishError(f"{folder}: no README.md card")
    card = (ModelCard if repo_type == "model" else DatasetCard).load(folder / "README.md")
    if not card.data.to_dict().get("license"):
        raise PublishError(f"{folder}/README.md: the card names no licence")
    if repo_type == "model" and ("adapter_config.json" in files or not any(f.endswith(".safetensors") for f in files)):
        raise PublishError(f"{folder}: not a standalone model (an adapter, or no safetensors weights)")
    leaks = files_holding(folder, files, secret_values(environ))
    if leaks:
        raise PublishError(
            "secret values from the environment found in "
            + ", ".join(f"{rel} ({name})" for rel, name in leaks)
            + ": nothing uploaded"
        )
    return repo_type, files


def publish(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    dry_run: bool = False,
    message: str = "Upload from humpback",
) -> dict:
    """Check `folder`, then create the Hub repo (if needed) and upload exactly the checked files."""
    repo_type, files = check_folder(folder)
    plan = {"repo_id": repo_id, "repo_type": repo_type, "folder": str(folder), "files": files}
    if dry_run:
        return plan
    api = HfApi()  # the token comes from the environment or the login cache, read by huggingface_hub alone
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), repo_type=repo_type, allow_patterns=files, commit_message=message
    )
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m humpback.evaluation.export.publish", description=__doc__.splitlines()[0]
    )
    parser.add_argument("folder", help="an exported folder: data/export/dataset or models/export/<model>")
    parser.add_argument("--repo-id", required=True, help="the Hub repository, OWNER/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--dry-run", action="store_true", help="check and list the files; upload nothing")
    parser.add_argument("--message", default="Upload from humpback", help="the commit message")
    args = parser.parse_args(argv)
    try:
        plan = publish(args.folder, args.repo_id, args.private, args.dry_run, args.message)
    except PublishError as exc:
        print(f"publish: error: {exc}", file=sys.stderr)
        return 1
    sizes = {f: (Path(args.folder) / f).stat().st_size for f in plan["files"]}
    print(
        f"{'would upload' if args.dry_run else 'uploaded'} {len(sizes)} files ({sum(sizes.values()) / 1e6:.1f} MB) "
        f"to the {plan['repo_type']} repo {plan['repo_id']}:"
    )
    print("\n".join(f"  {f}  {n / 1e6:.2f} MB" for f, n in sizes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
