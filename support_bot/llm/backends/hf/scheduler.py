"""Continuous batching for local transformers models: one scheduler thread owns the model and runs every active
request in shared steps; requests join at the next step and leave the moment they finish.

KV cache (kv_cache.py): a pool of 16-token blocks. A request is admitted when a row and the blocks of its budget
(prompt + max_new_tokens, at most the context) are free, keeps them for its life and frees them when it ends: no
keys/values are copied when rows leave, and memory follows what requests need rather than the full context each.

One scheduler step:
1. Prefill, chunked: prompts of admitted requests are fed in chunks, oldest request first, until the step's token
   budget (`prefill_token_budget`) is spent, so a long prompt delays the decoding streams by at most one budget's
   worth of work per step. A prompt that fits in one chunk is prefilled exactly as plain `generate` does; later
   chunks attend over the request's cached blocks under a causal mask shifted to their offset.
2. Decode: one token for every decoding row. Per-row state lives on the model's device, indexed by row slot: block
   tables, lengths and the newest token. A step gathers the live rows' entries there and scatters the sampled
   tokens back, so the only host transfers are the live-row index (when the batch changes) and one copy of the
   sampled tokens per step; stop checks run on that copy, with no further syncs. On a GPU the steps overlap: step
   N is launched from the device state before the host reads step N-1's tokens, whose copy (queued before step N)
   arrives while step N runs, so the host's work (stop checks, handing tokens to consumers, admitting requests)
   hides behind the GPU's. A row that ended at step N-1 has run step N too; that token is dropped (one wasted row
   step per finished request). On a CPU every kernel runs as it is called, there is nothing to hide, and steps do
   not overlap.

Attention: each row writes at its own length. With FlexAttention (flex.py; the default where decode steps are
captured on one GPU) a decode step hands attention the whole pool under a block mask built from the rows' block
tables, so each row reads its own blocks up to its own length and no mask over the batch's span exists: one CUDA
graph per batch bucket, captured at warm-up, serves rows of any lengths, and padding rows of a bucket read the scratch
block only. With dense attention (CPUs, several GPUs, or a stack whose compiler cannot build the flex kernel) each
row reads its own blocks gathered over the batch's span under a mask that hides its tail: on a CPU the span is the
longest row + 1 (eager, no padding to a bucket); on a single GPU the step is replayed from graphs per (batch bucket,
span bucket) (graphs.py), each row reading the span bucket. An eager dense step whose rows all have one length (a
single stream, or requests that started together) passes no mask, and sdpa runs unmasked as in `generate`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from support_bot.llm.backends.hf import flex
from support_bot.llm.backends.hf.cpu_linear import LinearKernels
from support_bot.llm.backends.hf.decode import DecodeSteps, chunk_mask, decode_mask, sample  # noqa: F401 - re-exported
from support_bot.llm.backends.hf.graphs import _CudaGraphDecoder
from support_bot.llm.backends.hf.lookup import LOOKUP_TOKENS, LookupSteps
from support_bot.llm.backends.hf.kv_cache import (
    BLOCK_SIZE, MIN_CPU_BLOCKS, _accepts, _cache_kwarg, _gpu_blocks_that_fit, _paged_cache_class, _static_cache,
    _text_config, blocks_for,
)
from support_bot.llm.backends.hf.steps import Launched, StepInputs, to_host

log = logging.getLogger(__name__)

# Prompt tokens prefilled per scheduler step: bounds how long one step (and so every decoding stream) can stall.
PREFILL_TOKEN_BUDGET = 512


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
        """The consumer is gone: free the request's row and blocks at the next step."""
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
    prefill_chunks: int = 0
    decode_steps: int = 0
    largest_batch: int = 0
    # Prompt lookup (lookup.py): draft tokens checked, and those kept.
    drafted: int = 0
    accepted: int = 0
    # Requests currently holding a row / waiting for one.
    active: int = 0
    waiting: int = 0
    # KV blocks held by requests now / in the pool (block 0, the scratch block, excluded).
    blocks_used: int = 0
    blocks_total: int = 0


@dataclass(eq=False)
class _Row:
    request: GenerationRequest
    slot: int  # index into the device-side row state
    blocks: list[int]
    capacity: int  # tokens the blocks hold for this request
    length: int = 0  # tokens whose keys/values are in the cache
    last: int = -1  # the newest token, fed to the next decode step at position `length`
    # Decode steps launched for the row whose tokens the host has not read yet (0, or 1 with overlapped steps): the
    # device's length for the row is `length + queued`.
    queued: int = 0
    # What the consumer hears once the row's blocks are freed: a Finished marker or the error that ended it.
    end: Any = None
    # The prompt and every token emitted since (prompt lookup drafts from it), and its n-gram index once built.
    history: list[int] = field(default_factory=list)
    lookup: Any = None

    def __post_init__(self) -> None:
        self.history = list(self.request.prompt_ids)

    @functools.cached_property
    def run(self) -> int | None:
        """The first block id when the row's blocks are consecutive ids (so its slots are one slice of the pool)."""
        first = self.blocks[0]
        return first if self.blocks == list(range(first, first + len(self.blocks))) else None

    @property
    def done(self) -> bool:
        return self.end is not None

    @property
    def prefilling(self) -> bool:
        return self.length < len(self.request.prompt_ids)


class _RowState:
    """Per-slot block tables, lengths and newest tokens on the model's device, so a decode step reads them there."""

    def __init__(self, rows: int, width: int, device: Any) -> None:
        import torch

        self.device = device
        self.tables = torch.zeros((rows, width), dtype=torch.long, device=device)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)
        self.last = torch.zeros(rows, dtype=torch.long, device=device)
        self._free = list(range(rows - 1, -1, -1))
        self._live: tuple[int, ...] = ()
        self._index: Any = None

    def take(self, blocks: list[int]) -> int:
        import torch

        slot = self._free.pop()
        self.tables[slot].zero_()
        self.tables[slot, : len(blocks)] = torch.tensor(blocks, dtype=torch.long)
        return slot

    def give_back(self, slot: int) -> None:
        self._free.append(slot)

    def index(self, slots: tuple[int, ...]) -> Any:
        """The live slots as a device tensor, copied over only when the batch changed."""
        import torch

        if slots != self._live:
            self._live = slots
            self._index = torch.tensor(slots, dtype=torch.long).to(self.device, non_blocking=True)
        return self._index

    def started(self, slot: int, length: int, token: Any) -> None:
        """A prefill finished: the row decodes `token` at `length` next."""
        self.lengths[slot] = length
        self.last[slot : slot + 1] = token

    def advanced(self, index: Any, chosen: Any) -> None:
        self.last[index] = chosen
        self.lengths[index] += 1


def _build_cache(
    model: Any, dtype: Any, *, static: bool, rows: int, width: int, block_size: int, name: str, device: Any = None
) -> Any:
    """The paged cache: on a GPU one pool sized to free memory, on a CPU a small pool that grows as needed."""
    num_layers = _text_config(model).num_hidden_layers
    most = width * rows + 1  # every row at the full context, plus the scratch block
    if static:
        # One allocation: graphs capture buffer addresses, so the cache never moves.
        blocks = min(_gpu_blocks_that_fit(model, dtype, block_size, rows, width * block_size), most)
        log.info("%s: KV cache of %d blocks x %d tokens", name, blocks - 1, block_size)
        return _paged_cache_class()(num_layers, blocks, max_blocks=blocks, block_size=block_size, device=device)
    return _paged_cache_class()(
        num_layers, min(MIN_CPU_BLOCKS, most), max_blocks=most, block_size=block_size, device=device
    )


def _drained(inbox: queue.SimpleQueue) -> list[GenerationRequest]:
    """The requests still queued in `inbox` (the shutdown marker left out), taken out of it."""
    out = []
    while True:
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            return out
        if item is not None:
            out.append(item)


class ContinuousBatcher(DecodeSteps, LookupSteps):
    """Owns a causal LM on a scheduler thread and continues many prompts at once in shared steps (the decode step
    itself: decode.py; a lone greedy stream's prompt-lookup step: lookup.py)."""

    def __init__(
        self,
        model: Any,
        *,
        eos_token_ids: set[int],
        max_seq_len: int,
        max_batch_size: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        prefill_token_budget: int = PREFILL_TOKEN_BUDGET,
        cuda_graphs: bool | None = None,
        name: str = "llm",
        block_size: int = BLOCK_SIZE,
        overlap: bool | None = None,
        attention: str = "auto",
        cpu_linear: str = "auto",
        lookup_tokens: int = LOOKUP_TOKENS,
    ) -> None:
        import torch

        self.model = model
        self.name = name
        self.eos_token_ids = frozenset(eos_token_ids)
        self.temperature = temperature
        self.top_p = top_p
        self.prefill_token_budget = max(1, prefill_token_budget)
        self.stats = BatcherStats()
        self.input_device = model.get_input_embeddings().weight.device
        self.dtype = model.get_input_embeddings().weight.dtype
        self._cache_kw = _cache_kwarg(model)
        self._keep_last = _accepts(model, "logits_to_keep")
        static = _static_cache(self.input_device)
        single_device = len({p.device for p in model.parameters()}) == 1
        if cuda_graphs is None:
            cuda_graphs = static and single_device
        if cuda_graphs and not (static and single_device):
            raise ValueError("CUDA graphs need the whole model on one GPU")
        self.cuda_graphs = cuda_graphs
        # Decode attention (see the module docstring): "flex" reads each row's own blocks of the pool under a block
        # mask; "dense" gathers the batch's span and masks each row's tail. By default flex where the decode step is
        # captured in graphs (one GPU) and the installed stack has it; a failed capture falls back to dense.
        if attention not in ("auto", "flex", "dense"):
            raise ValueError(f"unknown decode attention {attention!r} (auto, flex or dense)")
        if attention == "auto":
            gpu = cuda_graphs and self.input_device.type == "cuda"
            attention = "flex" if gpu and flex.use_on(model) else "dense"
        elif attention == "flex" and not flex.use_on(model):
            raise ValueError("FlexAttention decode needs torch's flex_attention and a model on sdpa attention")
        self.attention = attention
        implementation = getattr(getattr(model, "config", None), "_attn_implementation", None)
        self._mask_free_decode = implementation in ("sdpa", flex.ATTENTION_NAME)
        # On a CPU, the linear layers' kernel per row count, timed on this model when the scheduler starts
        # (cpu_linear.py): decode steps of a few rows take the weight-first product where it is faster.
        on_cpu = self.input_device.type == "cpu"
        self.linear_kernels = LinearKernels(model, cpu_linear) if on_cpu and single_device else None
        # Draft tokens a lone greedy stream checks per step from its own prompt (lookup.py); 0: never.
        self.lookup_tokens = max(0, lookup_tokens)
        self.max_seq_len = max_seq_len
        self.max_rows = max_batch_size
        # Block-table width: a row never holds more than the context.
        self.table_width = blocks_for(max_seq_len, block_size)
        self.cache = _build_cache(
            model, self.dtype, static=static, rows=max_batch_size, width=self.table_width, block_size=block_size,
            name=name, device=self.input_device,
        )  # fmt: skip
        self.rows = _RowState(max_batch_size, self.table_width, self.input_device)
        # The fixed inputs of graph-captured and flex decode steps, and the block mask that reads them.
        self.inputs = StepInputs(max_batch_size, self.table_width, self.input_device)
        self.flex_mask = flex.DecodeMask(self.inputs.tables, self.inputs.positions, self.cache)
        self._graphs = _CudaGraphDecoder(self) if cuda_graphs else None
        # Overlapped decode steps (see the module docstring): on a GPU by default, where launches are asynchronous.
        self.overlap = self.input_device.type == "cuda" if overlap is None else overlap
        self._launched = Launched(self.overlap, self._emit)
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
        """Queue a request; it joins the running batch at the next step when a row and its blocks are free."""
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

        kernels = self.linear_kernels
        try:
            with torch.inference_mode(), (kernels.serving() if kernels else contextlib.nullcontext()):
                if kernels is not None:
                    kernels.tune()
                if self._graphs is not None and not self._graphs.warm_up():
                    self._graphs = None
                while self._admit():
                    if self._rows:
                        self._step()
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
        for request in [*self._waiting, *_drained(self._inbox)]:
            request.output.put(exc)
        self._waiting.clear()

    def _admit(self) -> bool:
        """Take new requests in and give rows and blocks to as many as fit, oldest first; False once closed."""
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
        for request in list(self._waiting):
            reason = request.halt_reason(now)
            if reason is not None:
                self._waiting.remove(request)
                if reason == "timeout":
                    request.output.put(TimeoutError(f"{self.name} stayed busy with other requests past the timeout"))
                else:
                    request.finish_reason = reason
                    request.output.put(Finished(reason))
        while self._waiting and len(self._rows) < self.max_rows:
            request = self._waiting[0]
            capacity = min(len(request.prompt_ids) + request.max_new_tokens, self.max_seq_len)
            needed = blocks_for(capacity, self.cache.block_size)
            if not request.prompt_ids or len(request.prompt_ids) >= self.max_seq_len:
                self._waiting.popleft()
                request.output.put(ValueError(f"a prompt of {len(request.prompt_ids)} tokens does not fit the context"))
                continue
            if not self.cache.can_take(needed):
                if not self._rows:
                    self._waiting.popleft()
                    request.output.put(RuntimeError(f"the KV cache cannot hold a {capacity}-token request"))
                    continue
                break  # first come, first served: later requests wait behind it for blocks to be freed
            self._waiting.popleft()
            blocks = self.cache.take(needed)
            self._rows.append(_Row(request, self.rows.take(blocks), blocks, capacity))
            request.admitted.set()
        self._count()
        return True

    def _count(self) -> None:
        self.stats.active, self.stats.waiting = len(self._rows), len(self._waiting)
        self.stats.blocks_total = self.cache.pool.total - 1
        self.stats.blocks_used = self.stats.blocks_total - self.cache.pool.free

    def _forward(self, **kwargs: Any) -> Any:
        cache = kwargs.pop("cache")
        return self.model(**kwargs, **{self._cache_kw: cache}, use_cache=True)

    def _step(self) -> None:
        now = time.monotonic()
        for row in self._rows:
            reason = row.request.halt_reason(now)
            if reason is not None:
                self._finish(row, reason)
        self._release()
        decoding = [row for row in self._rows if not row.prefilling]
        budget = self.prefill_token_budget
        for row in [row for row in self._rows if row.prefilling]:
            if budget <= 0:
                break
            budget -= self._prefill_chunk(row, budget)
        if decoding:
            if not self._lookup_step(decoding):
                self._decode_step(decoding)
        else:
            self._launched.flush()
        self._release()

    def _forward_chunk(self, table: Any, ids: list[int], start: int, keep: int = 1) -> Any:
        """Run tokens `ids` at positions start.. of the request whose block ids are `table`; the last `keep`
        positions' logits [keep, vocab]."""
        import torch

        device, n = self.input_device, len(ids)
        positions = torch.arange(start, start + n, device=device)
        self.cache.plan.prefill(table, start, positions)
        # A first chunk gets transformers' own causal mask; later ones see every cached column before their own.
        mask = {} if start == 0 else {"attention_mask": chunk_mask(start, n, self.dtype, device)}
        out = self._forward(
            input_ids=torch.tensor([ids], dtype=torch.long, device=device),
            position_ids=positions[None],
            cache=self.cache,
            # Only the last positions' logits are needed; the full [prompt, vocab] matrix is a sizeable cost.
            **({"logits_to_keep": keep} if self._keep_last else {}),
            **mask,
        )
        return out.logits[0, -keep:]

    def _prefill_chunk(self, row: _Row, budget: int) -> int:
        """Prefill up to `budget` more prompt tokens of `row`; the tokens used."""
        prompt = row.request.prompt_ids
        start = row.length
        ids = prompt[start : start + budget]
        try:
            logits = self._forward_chunk(self.rows.tables[row.slot], ids, start)
            row.length += len(ids)
            self.stats.prefill_chunks += 1
            if row.prefilling:
                return len(ids)
            chosen = sample(logits, self.temperature, self.top_p)
            token = to_host(chosen)[0]
        except Exception as exc:  # noqa: BLE001 - the caller gets the error, other requests go on
            log.warning("%s: prefill of a %d-token prompt failed: %s", self.name, len(prompt), exc)
            row.end = exc
            return len(ids)
        self.stats.prefills += 1
        self.rows.started(row.slot, row.length, chosen)
        row.last = token
        self._emit(row, token)
        return len(ids)

    def _emit(self, row: _Row, token: int) -> None:
        request = row.request
        row.history.append(token)
        if token in self.eos_token_ids and not request.ignore_eos:
            self._finish(row, "eos")
            return
        request.generated += 1
        self.stats.tokens += 1
        request.output.put(token)
        if request.generated >= request.max_new_tokens:
            self._finish(row, "length")
        elif row.length + 1 >= row.capacity:
            # The request's budget is spent: prompt and answer fill the context.
            self._finish(row, "length")

    def _finish(self, row: _Row, reason: str) -> None:
        if row.done:
            return
        row.request.finish_reason = reason
        row.end = Finished(reason)

    def _release(self) -> None:
        """Drop finished rows: their blocks and slot go back to the pools, nothing is copied; then tell consumers."""
        ended = [row for row in self._rows if row.done]
        if not ended:
            return
        self._rows = [row for row in self._rows if not row.done]
        for row in ended:
            self.cache.give_back(row.blocks)
            self.rows.give_back(row.slot)
        self._count()
        for row in ended:
            row.request.output.put(row.end)
