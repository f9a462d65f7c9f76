"""Local model files: the tokenizer and the weights, a GGUF de-quantized once into a cached Hugging Face copy.

Shared by the transformers backend (to generate) and the OpenAI-compatible one (to count tokens exactly).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from support_bot.core.config import Settings
from support_bot.llm.presets import PRESETS
from support_bot.llm.pull import ResolvedModel

log = logging.getLogger(__name__)

CONVERTED_STAMP = "gguf_source.json"


def _dtype_kwargs(dtype: Any) -> dict[str, Any]:
    import transformers
    from packaging.version import Version

    # transformers renamed torch_dtype to dtype in 4.56.
    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: dtype}


def converted_dir(settings: Settings, resolved: ResolvedModel) -> Path:
    """Where the de-quantized Hugging Face copy of a GGUF model is cached."""
    if resolved.name in PRESETS:
        return settings.model_cache_dir / resolved.name / "converted"
    key = hashlib.sha256(str(resolved.weights).encode()).hexdigest()[:12]
    return settings.model_cache_dir / "_converted" / f"{Path(resolved.gguf_file or 'model').stem}-{key}"


def _gguf_stamp(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"gguf": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _converted_is_current(directory: Path, stamp: dict[str, Any]) -> bool:
    try:
        return json.loads((directory / CONVERTED_STAMP).read_text(encoding="utf-8")) == stamp
    except (OSError, ValueError):
        return False


def _save_converted(model: Any, tokenizer: Any, directory: Path, stamp: dict[str, Any]) -> None:
    """Cache a plain HF copy of a GGUF-loaded model; best effort, loading from the GGUF still works without it."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        # The de-quantized weights are ordinary tensors; only the GGUF markers block save_pretrained.
        model.config.__dict__.pop("quantization_config", None)
        model.hf_quantizer = None
        model.is_quantized = False
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CONVERTED_STAMP).write_text(json.dumps(stamp), encoding="utf-8")
        tmp.chmod(0o755)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except Exception as exc:  # noqa: BLE001 - a missing cache only costs load time
        log.warning("could not cache a converted copy of %s: %s", stamp["gguf"], exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer(settings: Settings, resolved: ResolvedModel) -> Any:
    """The model's tokenizer, from the converted cache when there is one."""
    from transformers import AutoTokenizer

    if resolved.gguf_file:
        cached = converted_dir(settings, resolved)
        if _converted_is_current(cached, _gguf_stamp(resolved.weights)):
            return AutoTokenizer.from_pretrained(cached)
        return AutoTokenizer.from_pretrained(resolved.path, gguf_file=resolved.gguf_file)
    return AutoTokenizer.from_pretrained(resolved.path)


def load_model(
    settings: Settings, resolved: ResolvedModel, *, device: str, dtype: Any, placement: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """(tokenizer, model) ready for generation on `device`; `placement`: `from_pretrained`'s device_map arguments
    for a model split over several GPUs (the transformers backend decides when to split)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if placement is None:
        placement = {"device_map": {"": device}} if device.startswith("cuda") else {}
    source: Path = resolved.path
    if resolved.gguf_file:
        cached = converted_dir(settings, resolved)
        stamp = _gguf_stamp(resolved.weights)
        if not _converted_is_current(cached, stamp):
            # Measured with SmolLM2-135M on 2 CPU cores: ~31 s to de-quantize the GGUF (tokenizer included) against
            # ~0.6 s to load the converted copy, so convert once and load the copy from then on.
            tokenizer = AutoTokenizer.from_pretrained(resolved.path, gguf_file=resolved.gguf_file)
            model = AutoModelForCausalLM.from_pretrained(
                resolved.path, gguf_file=resolved.gguf_file, **_dtype_kwargs(torch.float32)
            )
            _save_converted(model, tokenizer, cached, stamp)
            model = model.to(device=device if device != "cuda" else "cuda:0", dtype=dtype)
            model.eval()
            return tokenizer, model
        source = cached
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, **_dtype_kwargs(dtype), **placement)
    if not placement:
        model = model.to(device)
    model.eval()
    return tokenizer, model
