"""Decode steps between the device and the host: the sampled tokens' copy to the host, and the steps launched whose
tokens the host has not read yet (one in flight when steps overlap; see scheduler.py's module docstring)."""

from __future__ import annotations

from typing import Any


class HostCopy:
    """Sampled token ids on their way to the host: on a GPU an asynchronous copy into pinned memory queued behind
    the kernels that produce them, read once it has landed; on a CPU the ids themselves."""

    def __init__(self, chosen: Any) -> None:
        import torch

        self._done = None
        if chosen.device.type != "cuda":
            self._host = chosen
            return
        self._host = torch.empty(chosen.shape, dtype=chosen.dtype, pin_memory=True)
        self._host.copy_(chosen, non_blocking=True)
        self._done = torch.cuda.Event()
        self._done.record()

    def tokens(self) -> list[int]:
        """The ids, waiting only for this copy (not for kernels queued after it)."""
        if self._done is not None:
            self._done.synchronize()
        return self._host.tolist()


def to_host(chosen: Any) -> list[int]:
    """Sampled token ids on the host, now."""
    return HostCopy(chosen).tokens()


class Launched:
    """Decode steps launched whose tokens the host has not read: at most one when steps overlap (see the module
    docstring), none otherwise. Reading a step hands each of its rows its token through `emit`."""

    def __init__(self, overlap: bool, emit: Any) -> None:
        self.overlap = overlap
        self._emit = emit
        self._pending: tuple[list[Any], HostCopy] | None = None

    def add(self, rows: list[Any], copy: HostCopy) -> None:
        """A step was launched for `rows`: read it now, or (overlapped) read the one before it while it runs."""
        for row in rows:
            row.queued += 1
        if not self.overlap:
            self._read(rows, copy)
            return
        previous, self._pending = self._pending, (rows, copy)
        if previous is not None:
            self._read(*previous)

    def flush(self) -> None:
        """Read the step still in flight, if any."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._read(*pending)

    def _read(self, rows: list[Any], copy: HostCopy) -> None:
        # A row that ended meanwhile drops its token: its step was wasted.
        for row, token in zip(rows, copy.tokens(), strict=True):
            row.queued -= 1
            if not row.done:
                row.length += 1
                row.last = token
                self._emit(row, token)


class StepInputs:
    """Fixed device buffers a decode step reads: each row's newest token, its position and its block table.

    Refilled in place (device to device) from the scheduler's row state before a step, never reallocated: captured
    CUDA graphs and the block mask of a FlexAttention step (flex.py) hold their addresses. Rows past the live batch
    (padding of a captured batch bucket) are zeroed: they write to and read the scratch block 0 at position 0.
    """

    def __init__(self, rows: int, width: int, device: Any) -> None:
        import torch

        self.tokens = torch.zeros(rows, dtype=torch.long, device=device)
        self.positions = torch.zeros(rows, dtype=torch.long, device=device)
        self.tables = torch.zeros((rows, width), dtype=torch.long, device=device)

    def fill(self, state: Any, index: Any, rows: int) -> None:
        """The live rows at slots `index` of `state` (the scheduler's _RowState) first, then padding up to `rows`."""
        n = index.shape[0]
        self.tokens[:n] = state.last[index]
        self.positions[:n] = state.lengths[index]
        self.tables[:n] = state.tables[index]
        self.zero(rows, start=n)

    def zero(self, rows: int, *, start: int = 0) -> None:
        """Rows [start, rows) as padding: token 0 at position 0 on the scratch block."""
        self.tokens[start:rows] = 0
        self.positions[start:rows] = 0
        self.tables[start:rows] = 0
