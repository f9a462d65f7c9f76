"""Linear layers of a few rows on a CPU: the product taken weight first, where it is faster.

A decode step multiplies every weight matrix by a handful of rows, one per decoding request. `F.linear(x, W)` asks
the BLAS for x @ W^T; the same numbers come from (W @ x^T)^T, which some BLAS libraries run much faster for a few
rows (MKL on the 2-core AMD EPYC this project is measured on: a SmolLM2-135M decode step of 4 rows 105 -> 65 ms,
one row and 256-token prefill unchanged). Which is faster depends on the CPU and its BLAS, so the engine times both on
the model's own weights, on its scheduler thread, when it starts (`LinearKernels.tune`), for each bucket of row
counts, and uses the weight-first product only where it measured clearly faster; `llm.cpu_linear` pins either.

Only the thread serving the model takes the choice, inside `LinearKernels.serving()`: anything else that runs the same
model (a benchmark's plain `generate`, a test, another thread) gets transformers' own `F.linear`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

KERNELS = ("linear", "weight_first")
# Row-count buckets timed at start (a bucket covers the counts up to it); larger inputs (prompt chunks, big batches)
# always take F.linear, which is the better kernel for matrix-sized products.
BUCKETS = (1, 2, 4, 8, 16, 32)
# The weight-first product is taken for a bucket only when it timed at least this much faster, so noise on a busy
# machine does not flip a bucket to the less usual kernel for nothing.
MARGIN = 0.95
# Timing rounds per bucket, each one pass of both kernels over every linear layer; the fastest pass of each counts.
ROUNDS = 3

_serving = threading.local()
# Tuned choices by (the model's linear shapes, dtype, threads): a second engine on the same model skips the timing.
_tuned: dict[tuple[Any, ...], dict[int, str]] = {}


def weight_first(x: Any, weight: Any, bias: Any = None) -> Any:
    """F.linear(x, weight, bias) computed as (weight @ x^T)^T; a single row is doubled, as the BLAS runs one row as a
    matrix-vector product, which is the slow path this avoids."""
    flat = x.reshape(-1, x.shape[-1])
    rows = flat.shape[0]
    if rows == 1:
        flat = flat.expand(2, -1).contiguous()
    out = (weight @ flat.t()).t()[:rows].contiguous()
    if bias is not None:
        out += bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


def _bucket(rows: int) -> int | None:
    for bucket in BUCKETS:
        if rows <= bucket:
            return bucket
    return None


class LinearKernels:
    """The kernel each row-count bucket uses for `model`'s linear layers on the serving thread."""

    def __init__(self, model: Any, choice: str = "auto") -> None:
        import torch

        if choice not in ("auto", *KERNELS):
            raise ValueError(f"unknown CPU linear kernel {choice!r} (auto, linear or weight_first)")
        self.requested = choice
        self.linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
        weight = self.linears[0].weight if self.linears else None
        self._key = (
            tuple(tuple(m.weight.shape) for m in self.linears),
            None if weight is None else weight.dtype,
            torch.get_num_threads(),
        )
        self.choices: dict[int, str] = {b: ("linear" if choice == "auto" else choice) for b in BUCKETS}
        for module in self.linears:
            if not getattr(module, "_weight_first_ready", False):
                module.forward = types.MethodType(_forward, module)
                module._weight_first_ready = True

    def tune(self, clock: Callable[[str, int], float] | None = None) -> dict[int, str]:
        """Time both kernels for every bucket (on the calling thread, which should be the serving one) and keep the
        faster; `clock(kernel, rows)` -> seconds replaces the timing (tests). A pinned choice is kept as it is."""
        if self.requested != "auto" or not self.linears:
            return self.choices
        if clock is None and self._key in _tuned:
            self.choices = dict(_tuned[self._key])
            return self.choices
        timed = clock or self._time_pass
        started = time.perf_counter()
        try:
            for bucket in BUCKETS:
                best = {kernel: float("inf") for kernel in KERNELS}
                # The clock of a test takes the row count; the real timing, inputs made once per bucket.
                arg = bucket if clock else self._inputs(bucket)
                for _ in range(ROUNDS):
                    for kernel in KERNELS:
                        best[kernel] = min(best[kernel], timed(kernel, arg))
                faster = best["weight_first"] < MARGIN * best["linear"]
                self.choices[bucket] = "weight_first" if faster else "linear"
        except Exception:  # noqa: BLE001 - serving goes on with transformers' own kernel
            log.exception("timing the CPU linear kernels failed; F.linear for every row count")
            self.choices = {bucket: "linear" for bucket in BUCKETS}
            return self.choices
        if clock is None:
            _tuned[self._key] = dict(self.choices)
        log.info("CPU linear kernels by rows %s (timed in %.1f s)", self.choices, time.perf_counter() - started)
        return self.choices

    def _inputs(self, rows: int) -> dict[int, Any]:
        """Random inputs of `rows` rows for every input width of the model's linear layers."""
        import torch

        widths = {(m.in_features, m.weight.dtype) for m in self.linears}
        return {width: torch.randn(rows, width, dtype=dtype) for width, dtype in widths}

    def _time_pass(self, kernel: str, inputs: dict[int, Any]) -> float:
        """Seconds for one pass of `kernel` over every linear layer, in model order, on `inputs` (`_inputs`)."""
        import torch
        import torch.nn.functional as F

        run = weight_first if kernel == "weight_first" else F.linear
        with torch.inference_mode():
            started = time.perf_counter()
            for module in self.linears:
                run(inputs[module.in_features], module.weight, module.bias)
            return time.perf_counter() - started

    def kernel(self, rows: int) -> str:
        bucket = _bucket(rows)
        return "linear" if bucket is None else self.choices[bucket]

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """The model's linear layers use the tuned kernels on this thread while the block runs."""
        previous = getattr(_serving, "kernels", None)
        _serving.kernels = self
        try:
            yield
        finally:
            _serving.kernels = previous


def _forward(module: Any, x: Any) -> Any:
    """nn.Linear.forward, with the serving thread's kernel choice."""
    import torch.nn.functional as F

    kernels = getattr(_serving, "kernels", None)
    if kernels is not None and x.device.type == "cpu":
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if rows and kernels.kernel(rows) == "weight_first":
            return weight_first(x, module.weight, module.bias)
    return F.linear(x, module.weight, module.bias)
