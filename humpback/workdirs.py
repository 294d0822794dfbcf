"""The one place for the project's working folders under `.humpback/` (git- and dvc-ignored, beside dvc.yaml):
scratch for resumable work (deleted when a stage finishes) and caches that outlive a stage. No stage output
ever lives here."""

from __future__ import annotations

from pathlib import Path

HUMPBACK_DIR = Path(".humpback")
SCRATCH_DIR = HUMPBACK_DIR / "scratch"  # shards, checkpoints, assembled downloads of a running stage
TRAIN_SCRATCH = SCRATCH_DIR / "train"  # training checkpoints, per role and fingerprint
HASH_CACHE = HUMPBACK_DIR / "hash-cache.json"  # sha256 of fingerprinted files (model weights), by path, size, mtime
JUDGE_CACHE = HUMPBACK_DIR / "cache" / "judge"  # judgements, per judge id
