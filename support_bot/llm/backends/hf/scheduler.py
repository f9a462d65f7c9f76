"""Continuous batching for local transformers models: one scheduler thread owns the model and runs every active
request in shared decode steps; requests join at the next step and leave the moment they finish.

Layout of the KV cache ("slots"): one preallocated buffer per layer, [rows, kv_heads, columns, head_dim]. Row i holds
request i's keys/values from column 0 on, so requests of different lengths never need shifting or re-padding: a
new request is prefilled alone (batch 1, exactly as plain `generate` would) straight into a free row, each decode step
writes every row's new key/value at that row's own length, and attention reads columns [0, longest + 1) under a mask
that hides each row's unused tail. A finished row is refilled by moving the last row into it. transformers'
StaticCache keeps one shared write position for the whole batch, which cannot express rows of different lengths
joining mid-flight, hence this small Cache subclass.

On a single GPU the decode step is captured in CUDA graphs, one per (batch bucket, attention span bucket), over the
static buffers; on a CPU (or a model spread over several GPUs) it runs eagerly with the cache grown on demand.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from support_bot.llm.backends.hf.graphs import _CaptureFailed, _CudaGraphDecoder
from support_bot.llm.backends.hf.kv_cache import (
    _accepts, _cache_kwarg, _gpu_rows_that_fit, _slot_cache_class, _static_cache, _text_config,
)

log = logging.getLogger(__name__)

# Columns a CPU cache starts with; it doubles as rows grow longer.
MIN_COLUMNS = 256


@dataclass(frozen=True)
class Finished:
    """End-of-stream marker put on a request's output queue, with why it ended."""

    reason: str  # "eos" | "length" | "stop" | "timeout" | "cancelled"


@dataclass(eq=False)
class GenerationRequest:
    """One prompt to continue; the scheduler writes token ids, then a Finished marker (or an exception), to `output`."""

    prompt_ids: list[int]
    max_new_tokens: int
    deadline: float
    stop: threading.Event | None = None
    # Benchmarks measure fixed-length decoding; answers always stop at the model's end-of-turn token.
    ignore_eos: bool = False
    output: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    admitted: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: int = 0
    finish_reason: str | None = None

    def cancel(self) -> None:
        """The consumer is gone: free the request's slot at the next step."""
        self.cancelled.set()

    def halt_reason(self, now: float) -> str | None:
        """Why the request must stop now, if it must."""
        if self.cancelled.is_set():
            return "cancelled"
        if self.stop is not None and self.stop.is_set():
            return "stop"
        if now >= self.deadline:
            return "timeout"
        return None


@dataclass
class BatcherStats:
    """Counters for monitoring and benchmarks."""

    requests: int = 0
    tokens: int = 0
    prefills: int = 0
    decode_steps: int = 0
    largest_batch: int = 0
    # Requests currently holding a row / waiting for one.
    active: int = 0
    waiting: int = 0


@dataclass
class _Row:
    request: GenerationRequest
    length: int  # tokens whose keys/values are in the cache
    last: int  # the newest token, fed to the next decode step at position `length`
    done: bool = False


class ContinuousBatcher:
    """Owns a causal LM on a scheduler thread and continues many prompts at once in shared decode steps."""

    def __init__(
        self,
        model: Any,
        *,
        eos_token_ids: set[int],
        max_seq_len: int,
        max_batch_size: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        prefill_token_budget: int = 4096,
        cuda_graphs: bool | None = None,
        name: str = "llm",
    ) -> None:
        import torch

        self.model = model
        self.name = name
        self.eos_token_ids = frozenset(eos_token_ids)
        self.temperature = temperature
        self.top_p = top_p
        # Prompt tokens prefilled before the running batch gets its next decode step: bounds how long a burst of
        # new arrivals stalls the customers already being answered.
        self.prefill_token_budget = prefill_token_budget
        self.stats = BatcherStats()
        self.input_device = model.get_input_embeddings().weight.device
        self.dtype = model.get_input_embeddings().weight.dtype
        self._cache_kw = _cache_kwarg(model)
        self._keep_last = _accepts(model, "logits_to_keep")
        self._mask_min = torch.finfo(self.dtype).min
        num_layers = _text_config(model).num_hidden_layers
        static = _static_cache(self.input_device)
        single_device = len({p.device for p in model.parameters()}) == 1
        if cuda_graphs is None:
            cuda_graphs = static and single_device
        if cuda_graphs and not (static and single_device):
            raise ValueError("CUDA graphs need the whole model on one GPU")
        self.cuda_graphs = cuda_graphs
        if static:
            # One allocation sized to GPU memory: graphs capture buffer addresses, so the cache never moves.
            # A spare last column takes the writes of padding rows in a captured batch bucket.
            columns = max_seq_len + 1
            rows = _gpu_rows_that_fit(model, self.dtype, columns, max_batch_size)
            self.max_rows, self.max_columns = rows, columns
            self.cache = _slot_cache_class()(num_layers, rows, columns)
            log.info("%s: KV cache of %d rows x %d tokens", name, rows, columns)
        else:
            self.max_rows, self.max_columns = max_batch_size, max_seq_len
            self.cache = _slot_cache_class()(num_layers, 1, min(MIN_COLUMNS, max_seq_len))
        self._graphs = _CudaGraphDecoder(self) if cuda_graphs else None
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: deque[GenerationRequest] = deque()
        self._rows: list[_Row] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-scheduler", daemon=True)
        self._thread.start()

    # --- public ------------------------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request; it joins the running batch at the next step when a row is free."""
        if self._closed.is_set() or not self.alive:
            raise RuntimeError(f"{self.name} is shut down")
        self._inbox.put(request)

    def close(self) -> None:
        """Stop the scheduler; requests still queued or running end with an error."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._inbox.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # --- scheduler thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        import torch

        try:
            with torch.inference_mode():
                while self._admit():
                    if self._rows:
                        self._decode_step()
        except BaseException as exc:  # noqa: BLE001 - every waiting consumer must hear about it
            log.exception("%s scheduler stopped", self.name)
            self._fail_everything(exc)
            raise
        self._fail_everything(RuntimeError(f"{self.name} was shut down"))

    def _fail_everything(self, exc: BaseException) -> None:
        self._closed.set()
        for row in self._rows:
            row.request.output.put(exc)
        self._rows.clear()
        while self._waiting:
            self._waiting.popleft().output.put(exc)
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item.output.put(exc)

    def _admit(self) -> bool:
        """Take new requests in and prefill as many as fit; False once closed."""
        block = not self._rows and not self._waiting
        while True:
            try:
                item = self._inbox.get(block=block)
            except queue.Empty:
                break
            if item is None:
                return False
            self.stats.requests += 1
            self._waiting.append(item)
            block = False
        now = time.monotonic()
        self.stats.waiting = len(self._waiting)
        for request in list(self._waiting):
            reason = request.halt_reason(now)
            if reason is not None:
                self._waiting.remove(request)
                if reason == "timeout":
                    request.output.put(TimeoutError(f"{self.name} stayed busy with other requests past the timeout"))
                else:
                    request.finish_reason = reason
                    request.output.put(Finished(reason))
        budget = self.prefill_token_budget
        admitted = 0
        while self._waiting and len(self._rows) < self.max_rows:
            request = self._waiting[0]
            if admitted and len(request.prompt_ids) > budget:
                break
            self._waiting.popleft()
            self._prefill(request)
            budget -= len(request.prompt_ids)
            admitted += 1
        self.stats.active, self.stats.waiting = len(self._rows), len(self._waiting)
        return True

    def _forward(self, **kwargs: Any) -> Any:
        cache = kwargs.pop("cache")
        return self.model(**kwargs, **{self._cache_kw: cache}, use_cache=True)

    def _prefill(self, request: GenerationRequest) -> None:
        import torch

        row = len(self._rows)
        n = len(request.prompt_ids)
        try:
            self.cache.reserve(row + 1, n + 1, max_rows=self.max_rows, max_columns=self.max_columns)
            ids = torch.tensor([request.prompt_ids], dtype=torch.long, device=self.input_device)
            self.cache.plan.prefill(row)
            out = self._forward(
                input_ids=ids,
                position_ids=torch.arange(n, device=self.input_device)[None],
                cache=self.cache,
                # Only the last position's logits are needed; the full [prompt, vocab] matrix is a sizeable cost.
                **({"logits_to_keep": 1} if self._keep_last else {}),
            )
            token = self._select(out.logits[:, -1])[0]
        except Exception as exc:  # noqa: BLE001 - the caller gets the error, other requests go on
            log.warning("%s: prefill of a %d-token prompt failed: %s", self.name, n, exc)
            request.output.put(exc)
            return
        self.stats.prefills += 1
        request.admitted.set()
        entry = _Row(request, length=n, last=token)
        self._rows.append(entry)
        self._emit(entry, token)
        self._compact()

    def _decode_step(self) -> None:
        now = time.monotonic()
        for row in self._rows:
            reason = row.request.halt_reason(now)
            if reason is not None:
                self._finish(row, reason)
        self._compact()
        if not self._rows:
            return
        tokens = [row.last for row in self._rows]
        lengths = [row.length for row in self._rows]
        try:
            self.cache.reserve(
                len(tokens), max(lengths) + 1, max_rows=self.max_rows, max_columns=self.max_columns
            )
            logits = None
            if self._graphs is not None:
                try:
                    logits = self._graphs.run(tokens, lengths)
                except _CaptureFailed:
                    # Some models do things a graph cannot hold (host syncs, dynamic shapes): serve them eagerly.
                    log.exception("%s: CUDA graph capture failed; decoding without graphs from now on", self.name)
                    self._graphs = None
            if logits is None:
                logits = self._eager_step(tokens, lengths)
            chosen = self._select(logits)
        except Exception as exc:  # noqa: BLE001 - the batch's requests fail; the scheduler keeps serving
            log.exception("%s: decode step failed", self.name)
            for row in self._rows:
                row.request.output.put(exc)
            self._rows.clear()
            return
        self.stats.decode_steps += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(tokens))
        for row, token in zip(self._rows, chosen, strict=True):
            row.length += 1
            row.last = token
            self._emit(row, token)
        self._compact()

    def _eager_step(self, tokens: list[int], lengths: list[int]) -> Any:
        import torch

        device = self.input_device
        positions = torch.tensor(lengths, dtype=torch.long, device=device)
        span = max(lengths) + 1
        self.cache.plan.decode(len(tokens), positions, span)
        out = self._forward(
            input_ids=torch.tensor(tokens, dtype=torch.long, device=device)[:, None],
            position_ids=positions[:, None],
            attention_mask=self.decode_mask(positions, span),
            cache=self.cache,
        )
        return out.logits[:, -1]

    def decode_mask(self, positions: Any, span: int) -> Any:
        """Additive [batch, 1, 1, span] mask: row i sees its columns 0..positions[i] (the new token included)."""
        import torch

        columns = torch.arange(span, device=positions.device)
        visible = columns[None, :] <= positions[:, None]
        zero = torch.zeros((), dtype=self.dtype, device=positions.device)
        mask = torch.where(visible, zero, torch.full((), self._mask_min, dtype=self.dtype, device=positions.device))
        return mask[:, None, None, :]

    def _select(self, logits: Any) -> list[int]:
        import torch

        if self.temperature <= 0:
            return logits.argmax(dim=-1).tolist()
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest set of tokens whose mass reaches top_p (always at least the most likely one).
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs > self.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        return torch.multinomial(probs, 1)[:, 0].tolist()

    def _emit(self, row: _Row, token: int) -> None:
        request = row.request
        if token in self.eos_token_ids and not request.ignore_eos:
            self._finish(row, "eos")
            return
        request.generated += 1
        self.stats.tokens += 1
        request.output.put(token)
        if request.generated >= request.max_new_tokens:
            self._finish(row, "length")

    def _finish(self, row: _Row, reason: str) -> None:
        if row.done:
            return
        row.done = True
        row.request.finish_reason = reason
        row.request.output.put(Finished(reason))

    def _compact(self) -> None:
        """Drop finished rows, moving the last row into each hole (one row copy instead of shifting the batch)."""
        for index in range(len(self._rows) - 1, -1, -1):
            if not self._rows[index].done:
                continue
            last = len(self._rows) - 1
            if index != last:
                moved = self._rows[last]
                self.cache.move_row(last, index, moved.length)
                self._rows[index] = moved
            self._rows.pop()
        self.stats.active = len(self._rows)
