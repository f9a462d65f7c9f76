"""Serving a tuned chat adapter: its LoRA merged into the weights in place, and taken out again exactly.

Merged rather than applied on the fly, so decoding costs what it cost before tuning; in place, so the scheduler's
KV cache and captured CUDA graphs (which hold the weights' addresses) stay valid and no second copy of the model is
ever needed (on a GPU the KV cache takes the memory a second copy would need). The original values of every weight an
adapter changed are kept on the CPU the first time it changes them, so switching to another adapter, or back to the
model as shipped, restores them bit for bit instead of subtracting a rounded delta.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."


def lora_deltas(adapter_dir: Path) -> dict[str, tuple[Any, Any, float]]:
    """{module name: (lora_A, lora_B, scaling)} of a LoRA saved by peft (plain LoRA on linear layers only)."""
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora") or config.get("lora_bias"):
        raise ValueError(f"{adapter_dir} is not a plain LoRA adapter; only those can be served")
    if config.get("rank_pattern") or config.get("alpha_pattern") or config.get("fan_in_fan_out"):
        raise ValueError(f"{adapter_dir} uses per-module ranks or transposed weights, which are not served")
    tensors = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    out: dict[str, tuple[Any, Any, float]] = {}
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[: -len(".lora_A.weight")]
        b = tensors[f"{name}.lora_B.weight"]
        rank = a.shape[0]
        alpha = float(config["lora_alpha"])
        scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        out[name.removeprefix(_PREFIX)] = (a, b, scaling)
    if not out:
        raise ValueError(f"{adapter_dir} holds no LoRA weights")
    return out


class MergedAdapter:
    """Puts one adapter's LoRA into a model's weights, or none, keeping the originals of whatever it changed."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.adapter: str | None = None
        self._originals: dict[str, Any] = {}

    def apply(self, adapter: str | None, adapter_dir: Path | None) -> None:
        """Make the weights the model's own plus `adapter_dir`'s LoRA (None: the model's own). No request may run."""
        import torch

        deltas = lora_deltas(adapter_dir) if adapter_dir is not None else {}
        modules = {name: self.model.get_submodule(name) for name in deltas}  # a wrong model fails before any change
        with torch.no_grad():
            for name, original in self._originals.items():
                weight = self.model.get_submodule(name).weight
                weight.copy_(original.to(weight.device))
            for name, (a, b, scaling) in deltas.items():
                weight = modules[name].weight
                if name not in self._originals:
                    self._originals[name] = weight.detach().to("cpu", copy=True)
                # As peft merges: the product in the adapter's float32, cast to the weights' type, added in place.
                delta = (b.to(weight.device, torch.float32) @ a.to(weight.device, torch.float32)) * scaling
                weight.add_(delta.to(weight.dtype))
        self.adapter = adapter
