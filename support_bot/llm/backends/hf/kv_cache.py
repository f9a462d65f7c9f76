"""The slot KV cache: one preallocated buffer per layer, [rows, kv_heads, columns, head_dim], one request per row.

Each row holds its request's keys/values from column 0 on, so rows of different lengths never shift; `_Plan` tells
every layer where the next forward pass writes (one row when prefilling, each row's own length when decoding).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)

# Share of free GPU memory the KV cache may take; the rest is left for activations and captured graphs.
GPU_CACHE_SHARE = 0.9


class _Plan:
    """What the next forward pass does with the cache; set by the scheduler, read by every layer."""

    def __init__(self) -> None:
        self.mode = "prefill"
        self.row = 0
        self.batch = 0
        self.span = 0
        self.positions: Any = None
        self._per_device: dict[Any, tuple[Any, Any]] = {}

    def decode(self, batch: int, positions: Any, span: int) -> None:
        self.mode, self.batch, self.positions, self.span = "decode", batch, positions, span
        self._per_device = {}

    def prefill(self, row: int) -> None:
        self.mode, self.row = "prefill", row

    def indices(self, device: Any) -> tuple[Any, Any]:
        """(row indices, write columns) on `device`; layers of a model split over GPUs each get their own copy."""
        import torch

        cached = self._per_device.get(device)
        if cached is None:
            positions = self.positions.to(device)
            cached = (torch.arange(self.batch, device=device), positions)
            self._per_device[device] = cached
        return cached


@functools.cache
def _slot_cache_class() -> type:
    """The Cache subclass, built on first use so that importing this module never loads transformers."""
    from transformers.cache_utils import Cache, CacheLayerMixin

    class SlotLayer(CacheLayerMixin):
        is_compileable = False
        is_sliding = False
        is_croppable = False

        def __init__(self, store: SlotCache) -> None:
            super().__init__()
            self.store = store

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            import torch

            rows, columns = self.store.rows, self.store.columns
            self.device = key_states.device
            heads = key_states.shape[1]
            self.keys = torch.zeros(
                (rows, heads, columns, key_states.shape[-1]), dtype=key_states.dtype, device=self.device
            )
            self.values = torch.zeros(
                (rows, heads, columns, value_states.shape[-1]), dtype=value_states.dtype, device=self.device
            )
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            plan = self.store.plan
            if plan.mode == "prefill":
                n = key_states.shape[-2]
                self.keys[plan.row, :, :n] = key_states[0]
                self.values[plan.row, :, :n] = value_states[0]
                # Attention during prefill uses the fresh states, exactly as a plain DynamicCache prefill does.
                return key_states, value_states
            rows, columns = plan.indices(self.device)
            self.keys[rows, :, columns] = key_states[:, :, 0]
            self.values[rows, :, columns] = value_states[:, :, 0]
            return self.keys[: plan.batch, :, : plan.span], self.values[: plan.batch, :, : plan.span]

        def get_mask_sizes(self, query: Any = None, *args: Any) -> tuple[int, int]:
            plan = self.store.plan
            if plan.mode == "decode":
                return plan.span, 0
            # transformers versions differ: some pass the query length, older ones the cache positions.
            return (query if isinstance(query, int) else int(query.shape[-1])), 0

        def get_seq_length(self, *args: Any) -> int:
            # Prefill always starts a row at column 0; decode steps pass their own 4D mask and positions.
            return 0

        def get_max_length(self) -> int:
            return self.store.columns

        def grow(self, rows: int, columns: int) -> None:
            import torch

            if not self.is_initialized:
                return
            old_rows, _, old_columns, _ = self.keys.shape
            for name in ("keys", "values"):
                old = getattr(self, name)
                new = torch.zeros((rows, old.shape[1], columns, old.shape[3]), dtype=old.dtype, device=old.device)
                new[:old_rows, :, :old_columns] = old
                setattr(self, name, new)

        def move_row(self, src: int, dst: int, length: int) -> None:
            if self.is_initialized:
                self.keys[dst, :, :length] = self.keys[src, :, :length]
                self.values[dst, :, :length] = self.values[src, :, :length]

    class SlotCache(Cache):
        """Per-row KV storage; rows are requests, each row's columns start at the request's first token."""

        def __init__(self, num_layers: int, rows: int, columns: int) -> None:
            self.plan = _Plan()
            self.rows = rows
            self.columns = columns
            super().__init__(layers=[SlotLayer(self) for _ in range(num_layers)])

        def reserve(self, rows: int, columns: int, *, max_rows: int, max_columns: int) -> None:
            """Make room for `rows` x `columns`, doubling capacity (the copy cost is amortized over many steps)."""
            if rows <= self.rows and columns <= self.columns:
                return
            new_rows, new_columns = self.rows, self.columns
            while new_rows < rows:
                new_rows *= 2
            while new_columns < columns:
                new_columns *= 2
            new_rows, new_columns = min(max(new_rows, rows), max_rows), min(max(new_columns, columns), max_columns)
            if new_rows < rows or new_columns < columns:
                raise RuntimeError(f"KV cache cannot grow to {rows} rows x {columns} columns")
            for layer in self.layers:
                layer.grow(new_rows, new_columns)
            self.rows, self.columns = new_rows, new_columns

        def move_row(self, src: int, dst: int, length: int) -> None:
            for layer in self.layers:
                layer.move_row(src, dst, length)

        def allocated(self) -> bool:
            return all(layer.is_initialized for layer in self.layers)

    return SlotCache


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


def _gpu_rows_that_fit(model: Any, dtype: Any, columns: int, wanted: int) -> int:
    """Rows of `columns` tokens the GPUs holding the model can cache, at most `wanted`."""
    import torch

    devices = {p.device for p in model.parameters() if p.device.type == "cuda"}
    free = sum(torch.cuda.mem_get_info(d)[0] for d in devices)
    per_row = _kv_bytes_per_token(model, dtype) * columns
    # Leave room for activations: the logits of a full batch plus a fixed margin per device.
    vocab = _text_config(model).vocab_size
    reserve = (1 << 30) * len(devices) + wanted * vocab * 4 * 4
    rows = int(max(0, free * GPU_CACHE_SHARE - reserve) // per_row)
    if rows < 1:
        raise RuntimeError(
            f"Not enough free GPU memory for one {columns}-token KV cache row ({per_row / 2**30:.1f} GiB needed)"
        )
    return min(rows, wanted)
