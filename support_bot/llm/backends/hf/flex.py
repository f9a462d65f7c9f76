"""Per-row-length decode attention over the paged KV pool with FlexAttention and a block mask built from block tables.

The dense decode path gathers every row's keys/values over the batch's span (on a GPU the span's power-of-two bucket)
and adds an explicit mask, so every row reads as many columns as the longest one and the mask rules out the fused
kernels. Here a decode step instead hands attention the whole pool, unmoved, as one key/value batch shared by every
row, and a `BlockMask` names each row's own blocks:

- full blocks (every token in it is before the row's newest one) are read without a mask;
- the row's last, partly filled block is read under `mask_mod`, which hides the columns past its length;
- every other block of the pool is skipped, so a row reads its own length rounded up to one 16-token block, and a
  padding row of a captured batch bucket reads the scratch block only.

`mask_mod` is exact (FlexAttention treats the block lists as a sparsity hint only): a pool column belongs to row b
when the table entry its block is listed at, `tables[b, order[block]]`, is that block, and is visible when its column
within the row is at most the row's position. `order` (kept by the cache) is each block's index in the table of the
request that holds it.

Compiled (`torch.compile`) on a GPU, FlexAttention lowers a one-token query to its flash-decoding kernel; on a CPU the
unfused reference runs, which the tests use to check it against the dense path. The tensors the mask reads are fixed
buffers refilled in place before each step, so a captured CUDA graph replays with the step's own tables.

Other forward passes (prompt chunks, `generate` on the same model) get no `BlockMask` and run transformers' sdpa,
unchanged: the model's attention implementation is switched to `ATTENTION_NAME`, which only adds this path.
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

log = logging.getLogger(__name__)

# The attention implementation name the model is switched to (registered with transformers' AttentionInterface).
ATTENTION_NAME = "support_bot_paged"
# Query rows per sparse block: one decode token per row, so any size that the kernels accept (they need a multiple of
# their own tile, 128 being FlexAttention's default).
Q_BLOCK = 128
# Dynamo recompiles for every batch bucket's shape (compiled without dynamic shapes, so that the batch stays static
# and the decoding kernel is chosen): room for all of them.
RECOMPILE_LIMIT = 64


def available() -> bool:
    """Whether the installed torch and transformers have what this path needs."""
    try:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention  # noqa: F401
        from transformers import AttentionInterface  # noqa: F401
        from transformers.masking_utils import AttentionMaskInterface  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _compiled_flex() -> Any:
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    dynamo = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo, name):
            setattr(dynamo, name, max(getattr(dynamo, name), RECOMPILE_LIMIT))
    return torch.compile(flex_attention, dynamic=False)


@functools.cache
def _quiet_reference() -> None:
    # The unfused reference on a CPU is the point there (tests check the path against the dense one); torch warns.
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile", category=UserWarning)


def _flex(query: Any, key: Any, value: Any, block_mask: Any, scale: float | None) -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    if query.is_cuda:
        kernel = _compiled_flex()
    else:
        _quiet_reference()
        kernel = flex_attention
    return kernel(query, key, value, block_mask=block_mask, scale=scale, enable_gqa=query.shape[1] != key.shape[1])


def _attention(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
    scaling: float | None = None, **kwargs: Any,
) -> tuple[Any, None]:  # fmt: skip
    """transformers' attention call: flex over the pool for a decode step's BlockMask, sdpa for everything else."""
    from torch.nn.attention.flex_attention import BlockMask
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if isinstance(attention_mask, BlockMask):
        out = _flex(query, key, value, attention_mask, scaling)
        # [batch, heads, 1, dim] -> [batch, 1, heads, dim], as the attention layers expect.
        return out.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


@functools.cache
def register() -> str:
    """Register the attention implementation (and sdpa's mask builder under its name) with transformers, once."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, _attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return ATTENTION_NAME


def use_on(model: Any) -> bool:
    """Switch `model` to the paged attention implementation; False (model unchanged) where it cannot be."""
    if not available():
        return False
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if current == ATTENTION_NAME:
        return True
    if current != "sdpa":
        # Only sdpa's prompt path is delegated to; a model on another implementation keeps the dense decode path.
        return False
    name = register()
    try:
        model.set_attn_implementation(name)
    except Exception as exc:  # noqa: BLE001 - a model class that cannot switch keeps the dense path
        log.warning("the model cannot switch its attention implementation (%s); dense decode attention", exc)
        return False
    return getattr(model.config, "_attn_implementation", None) == name


class DecodeMask:
    """The block mask of a decode step, built on the device from fixed buffers: the rows' block tables and positions
    (the step's own inputs) and the cache's block order (`cache.order`). The buffers are refilled in place, never
    replaced, so a mask built while a CUDA graph is captured reads each replay's rows (a GPU pool never grows)."""

    def __init__(self, tables: Any, positions: Any, cache: Any) -> None:
        self.tables, self.positions, self.cache = tables, positions, cache
        block_size = cache.block_size

        def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
            block = kv_idx // block_size
            index = self.cache.order[block]
            # The block is the row's own (listed at its index in the row's table) and the column is not past the row.
            return (self.tables[b, index] == block) & (index * block_size + kv_idx % block_size <= self.positions[b])

        self.mask_mod = mask_mod

    def build(self, rows: int) -> Any:
        """The BlockMask for the first `rows` rows of the buffers."""
        import torch
        from torch.nn.attention.flex_attention import BlockMask

        size, pool_blocks = self.cache.block_size, self.cache.pool.total
        tables = self.tables[:rows].to(torch.int32)
        visible = self.positions[:rows] + 1  # columns 0..position
        full = (visible // size).to(torch.int32)
        partial = (visible % size > 0).to(torch.int32)
        width = tables.shape[1]
        pad = pool_blocks - width
        # The compiled kernels want the block lists as long as the pool; entries past a row's count are never read.
        full_indices = torch.nn.functional.pad(tables, (0, pad)) if pad > 0 else tables[:, : pool_blocks]
        # The row's last block, read under the mask; the table's own order puts it right after the full ones.
        last = tables.gather(1, full.long().clamp(max=width - 1)[:, None])
        partial_indices = torch.zeros_like(full_indices)
        partial_indices[:, :1] = last
        return BlockMask.from_kv_blocks(
            partial[:, None, None], partial_indices[:, None, None], full[:, None, None], full_indices[:, None, None],
            BLOCK_SIZE=(Q_BLOCK, size), mask_mod=self.mask_mod, seq_lengths=(1, pool_blocks * size),
            compute_q_blocks=False,
        )  # fmt: skip
