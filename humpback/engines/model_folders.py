"""The model folders the prepare stages write: `models/base` and `models/curator`.

Every later stage loads `models/base` (or an adapter on it) the same fast way, whatever the reference was: a GGUF
inside an installed package is dequantized once, not in every stage. `curate.model: self` (the paper) needs no
model: its folder holds only a README saying the curators are m0 and m1, so the scoring stages can always depend
on it.
"""

from __future__ import annotations

from pathlib import Path

from humpback.storage.records import atomic_folder

SELF_NOTE = (
    "# No named curator\n\n`curate.model: self`: score@1 is rated by m0 and score@2 by m1 (the paper's "
    "self-curation). Set `curate.model` to a model reference to curate with another model.\n"
)
SELF_MARKER = "SELF_CURATOR"  # the one file (beside the README) of the placeholder folder


def prepare_model(ref: str, dtype: str, out: str | Path) -> Path:
    """Load `ref` as an unquantized transformers model and save it to `out` atomically, with a model card."""
    # imported here: torch and transformers take seconds to import, and `prepare_curator("self")` needs neither
    from humpback.engines.models import load_referenced_model, model_card, save_model

    model, tokenizer = load_referenced_model(ref, dtype)
    with atomic_folder(out) as tmp:
        save_model(model, tokenizer, tmp)
        (tmp / "README.md").write_text(model_card(ref), encoding="utf-8")
    return Path(out)


def prepare_curator(ref: str, dtype: str, out: str | Path) -> Path:
    """`prepare_model` for a named curator; the placeholder folder for `self`."""
    if ref == "self":
        with atomic_folder(out) as tmp:
            (tmp / "README.md").write_text(SELF_NOTE, encoding="utf-8")
            (tmp / SELF_MARKER).write_text("self\n", encoding="utf-8")
        return Path(out)
    return prepare_model(ref, dtype, out)


def is_self(folder: str | Path) -> bool:
    """Whether a prepared curator folder is the `self` placeholder (not a model, not an adapter)."""
    return (Path(folder) / SELF_MARKER).is_file()
