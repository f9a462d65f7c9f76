"""Which GPUs a model is loaded on: one card whenever the weights fit one, split over the fewest cards otherwise.

Splitting a model that fits one card (what `device_map="auto"` does with every card visible) runs one card at a time
and rules out the captured decode graphs, so a 7B model goes whole onto the card with the most free memory and only a
model too big for any card (Llama-2-70B) is spread out. The split places whole layers (pipeline style, one card busy
at a time): the installed stack's tensor parallelism (transformers' `tp_plan`) needs one process per card stepping in
lockstep, which this single-process engine does not run; serve such a model through a tensor-parallel server and the
OpenAI-compatible backend when its speed matters (README, "GPU").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support_bot.core.errors import ConfigurationError

log = logging.getLogger(__name__)

# Share of a card's free memory the weights may take for the model to count as fitting it: the rest holds the KV
# cache (sized from what is left, see kv_cache.py), the activations and the captured graphs.
WEIGHTS_SHARE = 0.75
# Per-card headroom over an even share when splitting: layers do not divide evenly, and the first and last cards
# also hold the embeddings and the output head.
SPLIT_SLACK = 1.15


@dataclass(frozen=True)
class Placement:
    """Where the weights go: `cards` are CUDA indices; `max_memory` caps each card's weights when split."""

    cards: tuple[int, ...]
    max_memory: dict[int, int] | None = None

    @property
    def split(self) -> bool:
        return len(self.cards) > 1

    @property
    def device(self) -> str:
        """The device the inputs go to (the first card)."""
        return f"cuda:{self.cards[0]}"

    def load_kwargs(self) -> dict[str, Any]:
        """`from_pretrained` arguments that put the weights here."""
        if not self.split:
            return {"device_map": {"": self.device}}
        return {"device_map": "auto", "max_memory": dict(self.max_memory or {})}


def plan_placement(weight_bytes: int, free_bytes: list[int]) -> Placement:
    """One card (the one with the most free memory) when the weights fit it, else the fewest cards that hold them."""
    if not free_bytes:
        raise ConfigurationError("A GPU was asked for but none is visible")
    # Most free memory first; the lower index breaks ties so that replicas agree on an idle machine.
    order = sorted(range(len(free_bytes)), key=lambda i: (-free_bytes[i], i))
    usable = {i: int(free_bytes[i] * WEIGHTS_SHARE) for i in order}
    if weight_bytes <= usable[order[0]]:
        return Placement(cards=(order[0],))
    for count in range(2, len(order) + 1):
        chosen = order[:count]
        if sum(usable[i] for i in chosen) < weight_bytes:
            continue
        even = int(weight_bytes / count * SPLIT_SLACK)
        caps = {i: min(usable[i], even) for i in chosen}
        if sum(caps.values()) < weight_bytes:
            # Uneven cards: let each take all it may rather than an even share.
            caps = {i: usable[i] for i in chosen}
        return Placement(cards=tuple(sorted(chosen)), max_memory=caps)
    raise ConfigurationError(
        f"The model's weights take {weight_bytes / 2**30:.1f} GiB but the visible GPUs have "
        f"{sum(free_bytes) / 2**30:.1f} GiB free together; use a smaller model or more GPUs"
    )


def weight_bytes(source: Path, dtype: Any, *, gguf_file: str | None = None) -> int:
    """Bytes the model at `source` takes in `dtype`, counted on a parameter-less (meta) copy built from its config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source, **({"gguf_file": gguf_file} if gguf_file else {}))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    itemsize = torch.empty((), dtype=dtype).element_size()
    # parameters() yields tied weights once, as they are stored once.
    return sum(p.numel() for p in skeleton.parameters()) * itemsize


def free_gpu_bytes() -> list[int]:
    """Free memory of every visible GPU, by CUDA index."""
    import torch

    return [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]


def place(source: Path, dtype: Any, *, gguf_file: str | None = None) -> Placement:
    """The placement for the model at `source` on the GPUs visible now."""
    needed = weight_bytes(source, dtype, gguf_file=gguf_file)
    free = free_gpu_bytes()
    placement = plan_placement(needed, free)
    if placement.split:
        log.info("%.1f GiB of weights fit no single GPU; split over cards %s (layer by layer)",
                 needed / 2**30, ",".join(map(str, placement.cards)))  # fmt: skip
    else:
        log.info("%.1f GiB of weights go whole onto %s (%.1f GiB free there)", needed / 2**30, placement.device,
                 free[placement.cards[0]] / 2**30)  # fmt: skip
    return placement
