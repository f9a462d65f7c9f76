"""CUDA graphs for the decode step: one captured graph per (batch bucket, attention span bucket) over the static
cache buffers, replayed instead of launching every kernel again."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# Batch sizes the GPU decode step is captured for; a batch runs in the smallest bucket that holds it.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Smallest attention span bucket (columns) for captured steps; spans grow in powers of two from here.
MIN_SPAN = 64


class _CaptureFailed(RuntimeError):
    """A decode step could not be captured in a CUDA graph."""


def _capture_cuda_graph(step: Callable[[], Any], *, device: Any, pool: Any) -> tuple[Callable[[], None], Any]:
    """Warm `step` up on a side stream, capture it in a CUDA graph; return (replay, the output tensor it refills)."""
    import torch

    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: CUDA calls other threads make meanwhile (a web worker, a benchmark) must not void the capture.
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        output = step()
    return graph.replay, output


class _CudaGraphDecoder:
    """Decode steps replayed from CUDA graphs, one per (batch bucket, span bucket), captured on first use.

    A graph replays fixed kernels on fixed addresses: the KV cache is allocated once, and each graph owns static
    token/position inputs that are refilled before every replay. Rows of a bucket beyond the live batch are padding:
    they write into the cache's spare last column and their logits are ignored.
    """

    def __init__(self, batcher: Any) -> None:  # the scheduler's ContinuousBatcher, which owns this decoder
        import torch

        self.batcher = batcher
        rows = batcher.max_rows
        self.buckets = tuple(b for b in BATCH_BUCKETS if b < rows) + (rows,)
        self.scratch = batcher.max_columns - 1
        # One memory pool for all graphs: they never run at once, so their temporaries can share memory.
        self.pool = torch.cuda.graph_pool_handle() if torch.cuda.is_available() else None
        self.graphs: dict[tuple[int, int], tuple[Callable[[], None], Any, Any, Any]] = {}

    def span(self, needed: int) -> int:
        """The attention span bucket for `needed` columns: a power of two, at least MIN_SPAN, at most the cache."""
        return min(max(MIN_SPAN, 1 << math.ceil(math.log2(needed))), self.batcher.max_columns)

    def run(self, tokens: list[int], lengths: list[int]) -> Any:
        import torch

        n = len(tokens)
        bucket = next(b for b in self.buckets if b >= n)
        key = (bucket, self.span(max(lengths) + 1))
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(*key)
            self.graphs[key] = entry
        replay, static_tokens, static_positions, logits = entry
        pad = bucket - n
        static_tokens.copy_(torch.tensor(tokens + [0] * pad, dtype=torch.long), non_blocking=True)
        static_positions.copy_(torch.tensor(lengths + [self.scratch] * pad, dtype=torch.long), non_blocking=True)
        replay()
        return logits[:n]

    def _capture(self, bucket: int, span: int) -> tuple[Callable[[], None], Any, Any, Any]:
        import torch

        batcher = self.batcher
        if not batcher.cache.allocated():
            raise RuntimeError("the KV cache must be allocated (by a prefill) before a decode step is captured")
        device = batcher.input_device
        static_tokens = torch.zeros(bucket, dtype=torch.long, device=device)
        # Warm-up and capture write into the spare column only, never into a live row.
        static_positions = torch.full((bucket,), self.scratch, dtype=torch.long, device=device)

        def step() -> Any:
            batcher.cache.plan.decode(bucket, static_positions, span)
            out = batcher._forward(
                input_ids=static_tokens[:, None],
                position_ids=static_positions[:, None],
                attention_mask=batcher.decode_mask(static_positions, span),
                cache=batcher.cache,
            )
            return out.logits[:, -1]

        started = time.monotonic()
        try:
            replay, logits = _capture_cuda_graph(step, device=device, pool=self.pool)
        except Exception as exc:
            raise _CaptureFailed(f"batch {bucket}, span {span}") from exc
        log.info(
            "%s: captured decode step for batch %d, span %d in %.2f s",
            batcher.name, bucket, span, time.monotonic() - started,
        )  # fmt: skip
        return replay, static_tokens, static_positions, logits
