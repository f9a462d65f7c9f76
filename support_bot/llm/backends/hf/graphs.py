"""CUDA graphs for the decode step over the static paged cache, all captured at warm-up and replayed instead of
launching every kernel again: one graph per batch bucket with FlexAttention decode (each row reads its own blocks,
whatever the others' lengths), one per (batch bucket, attention span bucket) with the dense masked path."""

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
    """Decode steps replayed from CUDA graphs, captured at warm-up.

    A graph replays fixed kernels on fixed addresses: the KV pool is allocated once, and the graphs share static
    inputs (the batcher's StepInputs: tokens, positions, block tables) refilled on the device before every replay
    from the scheduler's row state. Rows of a bucket beyond the live batch are padding: their block tables point at
    the scratch block 0, they write there at position 0, and their logits are ignored.
    """

    def __init__(self, batcher: Any) -> None:  # the scheduler's ContinuousBatcher, which owns this decoder
        import torch

        self.batcher = batcher
        rows = batcher.max_rows
        self.buckets = tuple(b for b in BATCH_BUCKETS if b < rows) + (rows,)
        self.max_span = batcher.table_width * batcher.cache.block_size
        self.spans = self._spans()
        # One memory pool for all graphs: they never run at once, so their temporaries can share memory.
        self.pool = torch.cuda.graph_pool_handle() if torch.cuda.is_available() else None
        self.graphs: dict[tuple[int, int], tuple[Callable[[], None], Any]] = {}

    def _spans(self) -> tuple[int, ...]:
        if self.batcher.attention == "flex":
            return (0,)  # no span: every row reads its own blocks
        spans, span = [], MIN_SPAN
        while span < self.max_span:
            spans.append(span)
            span *= 2
        return (*spans, self.max_span)

    def span(self, needed: int) -> int:
        """The attention span bucket for `needed` columns: the smallest captured span that holds them (0, the only
        one, with FlexAttention)."""
        if self.spans == (0,):
            return 0
        return next(s for s in self.spans if s >= needed)

    def warm_up(self) -> bool:
        """Allocate the cache and capture every decode graph before serving; False if a capture failed.

        A failed capture of the FlexAttention step (a stack whose compiler cannot build its kernel) retries with the
        dense masked step before giving up on graphs."""
        import torch

        batcher = self.batcher
        # One token into the scratch block: the layers allocate their pools on their own devices.
        batcher._forward_chunk(torch.zeros(batcher.table_width, dtype=torch.long, device=batcher.input_device), [0], 0)
        started = time.monotonic()
        while True:
            try:
                for bucket in self.buckets:
                    for span in self.spans:
                        self.graphs[(bucket, span)] = self._capture(bucket, span)
                break
            except _CaptureFailed:
                self.graphs.clear()
                if batcher.attention == "flex":
                    log.exception("%s: capturing the FlexAttention decode step failed; dense attention", batcher.name)
                    batcher.attention = "dense"
                    self.spans = self._spans()
                    continue
                # Some models do things a graph cannot hold (host syncs, dynamic shapes): serve them eagerly.
                log.exception("%s: CUDA graph capture failed; decoding without graphs", batcher.name)
                return False
        log.info(
            "%s: captured %d decode graphs (%s attention) in %.1f s", batcher.name, len(self.graphs),
            batcher.attention, time.monotonic() - started,
        )  # fmt: skip
        return True

    def run(self, index: Any, needed: int) -> Any:
        """Logits of the rows at slots `index` (a device tensor), whose attention needs `needed` columns."""
        n = index.shape[0]
        bucket = next(b for b in self.buckets if b >= n)
        replay, logits = self.graphs[(bucket, self.span(needed))]
        # Device-to-device refills; padding rows stay on the scratch block at position 0.
        self.batcher.inputs.fill(self.batcher.rows, index, bucket)
        replay()
        return logits[:n]

    def _capture(self, bucket: int, span: int) -> tuple[Callable[[], None], Any]:
        batcher = self.batcher
        if not batcher.cache.allocated():
            raise RuntimeError("the KV cache must be allocated before a decode step is captured")
        # Warm-up and capture run on zeroed inputs: they write only into the scratch block, never a live row.
        batcher.inputs.zero(bucket)

        def step() -> Any:
            return batcher.decode_forward(bucket, span)

        try:
            replay, logits = _capture_cuda_graph(step, device=batcher.input_device, pool=self.pool)
        except Exception as exc:
            raise _CaptureFailed(f"batch {bucket}, span {span}") from exc
        return replay, logits
