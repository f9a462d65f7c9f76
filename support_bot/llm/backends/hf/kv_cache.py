"""The paged KV cache: one pool of fixed-size blocks per layer, shared by every request through its block table.

Storage per layer is [blocks * BLOCK_SIZE, kv_heads, head_dim]: slot `b * BLOCK_SIZE + i` holds token i of block b.
A request is admitted only when the pool has the blocks its budget (prompt + max_new_tokens, at most the context)
needs; it gets them for its whole life and gives them back when it ends, so no keys/values ever move and capacity
follows what requests need instead of the full context per request. Block 0 is scratch, never handed out: padding
rows of a captured batch bucket and the unused tail of a block table point at it.

`_Plan` tells every layer what the next forward pass does:
- "prefill": one request's chunk of prompt tokens [start, start + n). Its keys/values are written to the request's
  slots; the first chunk attends over its own fresh states (exactly as plain `generate` prefills), a later chunk over
  the request's slots [0, start + n) gathered from the pool, under a causal mask shifted by `start`.
- "decode": one new token per row; each row writes at its own length. Under FlexAttention (`pool`) every layer hands
  attention the pool itself and a block mask picks each row's blocks (flex.py); otherwise each row reads its slots
  [0, span) gathered through its block table under an explicit mask that hides its tail. A single row whose blocks
  are consecutive reads a view of the pool instead of a gathered copy.
On a CPU the pool grows (doubling its block count; block ids stay valid); on a GPU it is one allocation sized to
free memory, so captured CUDA graphs keep valid addresses.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

log = logging.getLogger(__name__)

# Share of free GPU memory the KV cache may take; the rest is left for activations and captured graphs.
GPU_CACHE_SHARE = 0.9
# Tokens per KV block: small enough that a request wastes little of its last block, large enough for cheap tables.
BLOCK_SIZE = 16
# Blocks a CPU pool starts with (block 0 included); it doubles as requests need more.
MIN_CPU_BLOCKS = 64


def blocks_for(tokens: int, block_size: int = BLOCK_SIZE) -> int:
    return max(1, math.ceil(tokens / block_size))


class BlockPool:
    """Which blocks are free; block 0 is scratch and never handed out."""

    def __init__(self, blocks: int, *, max_blocks: int) -> None:
        if blocks < 2 or max_blocks < blocks:
            raise ValueError(f"a pool needs at least 2 blocks and room to hold them ({blocks}, {max_blocks})")
        self.total = blocks
        self.max_blocks = max_blocks
        # Popped from the end: the lowest ids go first, so a quiet server keeps reusing the same memory.
        self._free = list(range(blocks - 1, 0, -1))

    @property
    def free(self) -> int:
        return len(self._free)

    def can_take(self, n: int) -> bool:
        return len(self._free) + self.max_blocks - self.total >= n

    def growth_for(self, n: int) -> int:
        """The pool size after making `n` blocks free (doubling, so growth costs are amortized)."""
        if len(self._free) >= n:
            return self.total
        wanted = self.total + n - len(self._free)
        return min(max(wanted, 2 * self.total), self.max_blocks)

    def grow(self, total: int) -> None:
        self._free[:0] = range(total - 1, self.total - 1, -1)
        self.total = total

    def take(self, n: int) -> list[int]:
        if len(self._free) < n:
            raise RuntimeError(f"KV cache has {len(self._free)} free blocks, {n} needed")
        taken = self._free[-n:][::-1]
        del self._free[-n:]
        return taken

    def give_back(self, blocks: list[int]) -> None:
        self._free.extend(sorted(blocks, reverse=True))


class _Plan:
    """What the next forward pass does with the cache; set by the scheduler, read by every layer."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.mode = "prefill"
        self.start = 0
        self.span = 0
        self.table: Any = None  # prefill: the request's block ids [W]; decode: block tables [batch, W]
        self.positions: Any = None  # prefill: the chunk's positions [n]; decode: each row's write position [batch]
        self.run: int | None = None  # decode of one row whose blocks are consecutive: its first slot
        # Decode under a FlexAttention block mask (flex.py): every layer hands attention the whole pool, ungathered.
        self.pool = False
        self._per_device: dict[Any, tuple[Any, Any]] = {}

    def prefill(self, table: Any, start: int, positions: Any) -> None:
        self.mode, self.table, self.start, self.positions = "prefill", table, start, positions
        self.span = start + positions.shape[0]
        self._per_device = {}

    def decode(
        self, tables: Any, positions: Any, span: int, *, run: int | None = None, pool: bool = False
    ) -> None:
        """`run`: the first slot of the one row's blocks when they are consecutive (a single stream on a pool that
        handed them out in order): every layer then reads its keys and values as a view of the pool, not a copy.
        `pool`: the step's attention takes a block mask over the whole pool (flex.py); nothing is gathered."""
        self.mode, self.table, self.positions, self.span = "decode", tables, positions, span
        self.run = run
        self.pool = pool
        self._per_device = {}

    def indices(self, device: Any) -> tuple[Any, Any]:
        """(slots written, slots read [rows, span]) on `device`; layers of a model split over GPUs get their own."""
        import torch

        cached = self._per_device.get(device)
        if cached is None:
            size = self.block_size
            table, positions = self.table.to(device), self.positions.to(device)
            columns = torch.arange(self.span, device=device)
            if self.mode == "prefill":
                write = table[positions // size] * size + positions % size
                read = (table[columns // size] * size + columns % size)[None]
            else:
                write = table.gather(1, (positions // size)[:, None])[:, 0] * size + positions % size
                read = None if self.pool else table[:, columns // size] * size + columns % size
            cached = (write, read)
            self._per_device[device] = cached
        return cached


@functools.cache
def _paged_cache_class() -> type:
    """The Cache subclass, built on first use so that importing this module never loads transformers."""
    from transformers.cache_utils import Cache, CacheLayerMixin

    class PagedLayer(CacheLayerMixin):
        is_compileable = False
        is_sliding = False
        is_croppable = False

        def __init__(self, store: PagedCache) -> None:
            super().__init__()
            self.store = store

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            import torch

            slots = self.store.pool.total * self.store.block_size
            self.device = key_states.device
            heads = key_states.shape[1]
            self.keys = torch.zeros((slots, heads, key_states.shape[-1]), dtype=key_states.dtype, device=self.device)
            self.values = torch.zeros(
                (slots, heads, value_states.shape[-1]), dtype=value_states.dtype, device=self.device
            )
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            plan = self.store.plan
            write, read = plan.indices(self.device)
            if plan.mode == "prefill":
                self.keys[write] = key_states[0].transpose(0, 1)
                self.values[write] = value_states[0].transpose(0, 1)
                if plan.start == 0:
                    # A first chunk attends over its fresh states, exactly as a plain DynamicCache prefill does.
                    return key_states, value_states
            else:
                self.keys[write] = key_states[:, :, 0]
                self.values[write] = value_states[:, :, 0]
                if plan.pool:
                    # [1, kv_heads, slots, dim]: the pool itself, shared by every row; the block mask picks the rows'.
                    return self.keys.permute(1, 0, 2)[None], self.values.permute(1, 0, 2)[None]
                if plan.run is not None:
                    # One row on consecutive blocks: its span is a slice of the pool (a view; plain `generate` copies
                    # its whole cache every step, and so would the gather below).
                    window = slice(plan.run, plan.run + plan.span)
                    return self.keys[window][None].transpose(1, 2), self.values[window][None].transpose(1, 2)
            # [rows, span, heads, dim] gathered through the block tables, viewed as attention wants it.
            return self.keys[read].transpose(1, 2), self.values[read].transpose(1, 2)

        def get_mask_sizes(self, query: Any = None, *args: Any) -> tuple[int, int]:
            plan = self.store.plan
            if plan.mode == "decode" or plan.start > 0:
                return plan.span, 0
            # transformers versions differ: some pass the query length, older ones the cache positions.
            return (query if isinstance(query, int) else int(query.shape[-1])), 0

        def get_seq_length(self, *args: Any) -> int:
            # Later chunks and decode steps pass their own 4D mask and positions; a first chunk starts at 0.
            return 0

        def get_max_length(self) -> int:
            return self.store.pool.max_blocks * self.store.block_size

        def grow(self, slots: int) -> None:
            import torch

            if not self.is_initialized:
                return
            for name in ("keys", "values"):
                old = getattr(self, name)
                new = torch.zeros((slots, *old.shape[1:]), dtype=old.dtype, device=old.device)
                new[: old.shape[0]] = old
                setattr(self, name, new)

    class PagedCache(Cache):
        """Per-layer block pools; requests own blocks through their tables, rows of a batch never share one."""

        def __init__(
            self, num_layers: int, blocks: int, *, max_blocks: int, block_size: int = BLOCK_SIZE, device: Any = None
        ) -> None:
            import torch

            self.block_size = block_size
            self.plan = _Plan(block_size)
            self.pool = BlockPool(blocks, max_blocks=max_blocks)
            # Each block's index in the table of the request holding it: how a block mask tells a row's own blocks
            # from the rest of the pool (flex.py).
            self.order = torch.zeros(blocks, dtype=torch.long, device=device)
            super().__init__(layers=[PagedLayer(self) for _ in range(num_layers)])

        def can_take(self, n: int) -> bool:
            return self.pool.can_take(n)

        def take(self, n: int) -> list[int]:
            """`n` free blocks, growing the pool first where it may (a CPU cache)."""
            import torch

            total = self.pool.growth_for(n)
            if total != self.pool.total:
                for layer in self.layers:
                    layer.grow(total * self.block_size)
                order = torch.zeros(total, dtype=self.order.dtype, device=self.order.device)
                order[: self.order.shape[0]] = self.order
                self.order = order
                self.pool.grow(total)
            blocks = self.pool.take(n)
            device = self.order.device
            self.order[torch.tensor(blocks, dtype=torch.long, device=device)] = torch.arange(n, device=device)
            return blocks

        def give_back(self, blocks: list[int]) -> None:
            self.pool.give_back(blocks)

        def allocated(self) -> bool:
            return all(layer.is_initialized for layer in self.layers)

    return PagedCache


def _accepts(model: Any, name: str) -> bool:
    import inspect

    return name in inspect.signature(model.forward).parameters


def _cache_kwarg(model: Any) -> str:
    """transformers 5.2x renamed the forward's `past_key_values` to `cache`."""
    return "cache" if _accepts(model, "cache") else "past_key_values"


def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _kv_bytes_per_token(model: Any, dtype: Any) -> int:
    import torch

    config = _text_config(model)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * kv_heads * head_dim * itemsize


def _static_cache(device: Any) -> bool:
    """GPUs get one fixed cache allocation (needed by CUDA graphs); CPUs grow theirs as requests need."""
    return device.type == "cuda"


def _gpu_blocks_that_fit(model: Any, dtype: Any, block_size: int, rows: int, span: int) -> int:
    """KV blocks of `block_size` tokens the GPUs holding the model can cache, leaving room for a batch of `rows`
    reading `span` columns each."""
    import torch

    devices = {p.device for p in model.parameters() if p.device.type == "cuda"}
    free = sum(torch.cuda.mem_get_info(d)[0] for d in devices)
    per_token = _kv_bytes_per_token(model, dtype)
    per_block = per_token * block_size
    config = _text_config(model)
    # Leave room for activations: the logits of a full batch, one layer's keys/values gathered for the whole batch,
    # and a fixed margin per device. With grouped-query attention the gathered keys/values may be repeated to every
    # query head as well (transformers does so where sdpa cannot take the groups); with one key/value head per query
    # head (Llama-2-7B/13B) nothing is repeated, and counting a copy there kept 64 requests of 1,664 tokens off an
    # 80 GB card (tests/llm/test_paged_cache.py).
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    repeat = heads // kv_heads
    copies = 1 + repeat if repeat > 1 else 1
    gathered = rows * span * per_token // config.num_hidden_layers * copies
    reserve = (1 << 30) * len(devices) + rows * config.vocab_size * 4 * 4 + gathered
    blocks = int(max(0, free * GPU_CACHE_SHARE - reserve) // per_block)
    if blocks < 2:
        raise RuntimeError(f"Not enough free GPU memory for a KV cache ({per_block / 2**20:.1f} MiB per block)")
    return blocks
