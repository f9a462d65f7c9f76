"""Local generation with transformers: GGUF or Hugging Face weights, CPU (fp32) or GPU (bf16), streamed, with
concurrent requests continuously batched (see scheduler.py) and the live tuned chat adapter merged in (lora.py)."""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from support_bot.core.config import Settings
from support_bot.core.errors import ConfigurationError, InvalidInput, ModelNotAvailable
from support_bot.llm.adapters import adapter_weights_dir, live_chat_adapter
from support_bot.llm.base import AnswerTruncated, StreamingEngine
from support_bot.llm.prompt import ChatMessage, count_tokens, render_prompt_ids
from support_bot.llm.pull import ResolvedModel, resolve_model
from support_bot.llm.weights import load_model

log = logging.getLogger(__name__)

# How often a waiting stream looks at its stop event and deadline while no token arrives.
_POLL_S = 0.05
_DTYPES = {
    "float32": "float32", "fp32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}  # fmt: skip
# adapter=FOLLOW: serve whichever tuned chat adapter is live (llm.adapters), switching between requests; None: the
# configured model as shipped; an artifact id: that adapter and no other (the gate compares two engines so).
FOLLOW = "follow"


def pick_device(requested: str) -> str:
    """"auto" becomes cuda when a GPU is visible, else cpu."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError(f"LLM device {requested!r} was asked for but no GPU is visible")
    return requested


def pick_dtype(requested: str, device: str) -> Any:
    """"auto" becomes bf16 on a GPU and fp32 on a CPU (CPU bf16 matmuls are slow and lossy)."""
    import torch

    if requested == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return getattr(torch, _DTYPES[requested.lower()])
    except KeyError:
        raise ConfigurationError(f"Unknown LLM dtype {requested!r}; use auto, float32, bfloat16 or float16") from None


def _usable_attention(model: Any) -> None:
    """Decode steps pass an explicit 4D mask, which the sdpa and eager attention paths take as is (and the paged
    flex implementation a model is switched to for decode on a GPU hands to sdpa)."""
    from support_bot.llm.backends.hf.flex import ATTENTION_NAME

    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation not in ("sdpa", "eager", ATTENTION_NAME):
        log.info("switching attention from %s to sdpa for batched decoding", implementation)
        model.set_attn_implementation("sdpa")


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a container's CPU quota (cgroup v2 or v1)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    quota: float | None = None
    try:
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="utf-8").split()[:2]
        quota = None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        try:
            limit_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text(encoding="utf-8"))
            period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text(encoding="utf-8"))
            quota = limit_us / period_us if limit_us > 0 else None
        except (OSError, ValueError):
            quota = None
    if quota is not None:
        usable = min(usable, max(1, math.ceil(quota)))
    return usable


def _limit_cpu_threads() -> None:
    """At most one intra-op thread per usable CPU: torch counts the host's cores, not a container's share, and
    surplus threads spin at every barrier against each other (several times slower, not just no faster)."""
    import torch

    usable = usable_cpus()
    if torch.get_num_threads() > usable:
        log.info("limiting torch to %d threads (usable CPUs)", usable)
        torch.set_num_threads(usable)


def _load_placed(settings: Settings, resolved: ResolvedModel, device: str, dtype: Any) -> tuple[str, Any, Any]:
    """(device, tokenizer, model); plain "cuda" (any card) becomes one card when the model fits one, else the fewest
    cards that hold it (placement.py)."""
    placement = None
    if device == "cuda":
        from support_bot.llm.backends.hf.placement import place

        chosen = place(resolved.path, dtype, gguf_file=resolved.gguf_file)
        device, placement = chosen.device, (chosen.load_kwargs() if chosen.split else None)
    tokenizer, model = load_model(settings, resolved, device=device, dtype=dtype, placement=placement)
    return device, tokenizer, model


def free_gpu_memory() -> None:
    """Collect what no longer has an owner and hand the CUDA allocator's cached blocks back to the driver: freed
    tensors otherwise stay reserved by this process and free memory, as the next KV cache sizes it, looks short."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


class TransformersEngine(StreamingEngine):
    """One local model served by a continuous-batching scheduler: concurrent requests share decode steps.

    Following the live chat adapter (the default), the engine stats the adapters' state file before each request.
    When the live adapter changed, the request that noticed it waits for the scheduler to finish the requests it is
    running (however fast their readers read), holds new ones back meanwhile, merges the new adapter into the weights
    in place (or restores the model as shipped), and goes on; the held-back requests then run on the new weights.
    No restart, no second copy of the model, and no answer written partly by each.
    """

    def __init__(
        self, settings: Settings, *, resolved: ResolvedModel | None = None, max_batch_size: int = 64,
        adapter: str | None = FOLLOW,
    ) -> None:
        self.settings = settings
        self.resolved = resolved or resolve_model(settings)
        self.device = pick_device(settings.llm.device)
        self.dtype = pick_dtype(settings.llm.dtype, self.device)
        self.device, tokenizer, model = _load_placed(settings, self.resolved, self.device, self.dtype)
        self._start(tokenizer, model, max_batch_size=max_batch_size, adapter=adapter)

    @classmethod
    def from_model(
        cls,
        settings: Settings,
        *,
        model: Any,
        tokenizer: Any,
        resolved: ResolvedModel,
        max_batch_size: int = 64,
        cuda_graphs: bool | None = None,
        adapter: str | None = None,
    ) -> TransformersEngine:
        """An engine around an already loaded model (benchmarks with random weights, tests); an adapter is merged
        into that model's own weights."""
        engine = cls.__new__(cls)
        engine.settings = settings
        engine.resolved = resolved
        engine.device = str(model.get_input_embeddings().weight.device)
        engine.dtype = model.get_input_embeddings().weight.dtype
        engine._start(tokenizer, model, max_batch_size=max_batch_size, cuda_graphs=cuda_graphs, adapter=adapter)
        return engine

    def _start(
        self, tokenizer: Any, model: Any, *, max_batch_size: int, cuda_graphs: bool | None = None,
        adapter: str | None = FOLLOW,
    ) -> None:
        from support_bot.llm.backends.hf.lora import MergedAdapter
        from support_bot.llm.backends.hf.scheduler import ContinuousBatcher

        self.tokenizer, self.model = tokenizer, model
        self.name = f"transformers:{self.resolved.name}"
        self.context_window = self.resolved.context_window
        self._follow = adapter == FOLLOW
        self._merged = MergedAdapter(model)
        # Requests handed to the scheduler and not over yet; none are handed over while adapters are switched.
        self._requests = threading.Condition()
        self._submitted: set[Any] = set()
        self._switching = False
        # The live adapter last noticed, served or not: one that cannot be served is not retried on every request.
        self._noticed = live_chat_adapter(self.settings) if self._follow else adapter
        self._put_adapter(self._noticed, strict=not self._follow)
        if not self.device.startswith("cuda"):
            _limit_cpu_threads()
        _usable_attention(model)
        config = self.generation_config(1)
        eos = config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        llm = self.settings.llm
        self.batcher = ContinuousBatcher(
            model, eos_token_ids=eos_ids, max_seq_len=self.context_window, max_batch_size=max_batch_size,
            temperature=llm.temperature, top_p=config.top_p if config.do_sample and config.top_p is not None else 1.0,
            cuda_graphs=cuda_graphs, name=self.name, attention=llm.decode_attention, cpu_linear=llm.cpu_linear,
            lookup_tokens=llm.prompt_lookup_tokens,
        )  # fmt: skip

    @property
    def adapter(self) -> str | None:
        """The tuned chat adapter merged into the weights now (None: the configured model as shipped)."""
        return self._merged.adapter if self._merged is not None else None

    def _put_adapter(self, artifact: str | None, *, strict: bool) -> None:
        """Merge `artifact` (None: none) into the weights; with no request running. Not strict: failing that, log
        it and serve the model as shipped (customers keep getting answers)."""
        weights = adapter_weights_dir(self.settings, artifact) if artifact is not None else None
        if artifact is not None and weights is None:
            if strict:
                raise ModelNotAvailable(f"the chat adapter {artifact} cannot be served (the log says why)")
            artifact = None
        started, started_with = time.monotonic(), self._merged.adapter
        try:
            self._merged.apply(artifact, weights)
        except Exception:
            if strict:
                raise
            log.exception("%s: could not merge the chat adapter %s; serving the model as shipped", self.name, artifact)
            self._merged.apply(None, None)
            return
        if artifact is not None or started_with is not None:
            log.info("%s: serving %s (%.1f s to switch)", self.name, artifact or "the model as shipped",
                     time.monotonic() - started)

    def _running(self) -> bool:
        """Whether the scheduler may still decode a token for any submitted request (called holding _requests)."""
        now = time.monotonic()
        self._submitted = {
            r for r in self._submitted if r.finish_reason is None and not r.cancelled.is_set() and now < r.deadline
        }
        return bool(self._submitted)

    def sync_adapter(self) -> None:
        """Serve the live chat adapter: a stat of its state file, and when it changed, the switch (once).

        The switch waits until the scheduler has finished the requests it was given (at most their time limit),
        with new ones held back, so that no answer is written by two sets of weights; the request that noticed it
        is answered by the new ones.
        """
        if not self._follow:
            return
        wanted = live_chat_adapter(self.settings)
        with self._requests:
            while self._switching:
                self._requests.wait()
            if wanted == self._noticed:
                return
            self._switching = True
            deadline = time.monotonic() + self.settings.llm.timeout_s + 5
            # The scheduler does not say when a request ends; a short poll costs nothing next to a switch.
            while self._running() and time.monotonic() < deadline:
                self._requests.wait(timeout=0.02)
            drained = not self._running()
        try:
            if drained:
                self._put_adapter(wanted, strict=False)
                self._noticed = wanted
            else:
                log.warning("%s: requests still run past their time limit; switching adapters on a later request",
                            self.name)
        finally:
            with self._requests:
                self._switching = False
                self._requests.notify_all()

    def drain(self) -> None:
        """Wait until the requests already handed to the scheduler are over (each for at most its time limit)."""
        with self._requests:
            while self._running():
                self._requests.wait(timeout=0.02)

    def close(self) -> None:
        """Stop the scheduler thread (requests still running end with an error) and give back the memory held by
        the weights, the KV cache and the captured graphs, so that a model loaded next finds it free."""
        batcher = self.batcher
        if batcher is None:
            return
        batcher.close()
        # Something may keep the closed engine itself alive (a stream object, a timer): drop what holds memory.
        self.batcher = self.model = self._merged = None
        del batcher
        if self.device.startswith("cuda"):
            free_gpu_memory()

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes as message content, by the model's own tokenizer."""
        return count_tokens(self.tokenizer, text)

    def prompt_ids(self, messages: list[ChatMessage]) -> list[int]:
        """The prompt exactly as the model receives it."""
        return render_prompt_ids(self.tokenizer, messages, self.resolved.prompt_format)

    def prompt_tokens(self, messages: list[ChatMessage]) -> int:
        """Tokens of the whole prompt, format and special tokens included."""
        return len(self.prompt_ids(messages))

    def generation_config(self, max_new_tokens: int) -> Any:
        """Greedy when temperature is 0; built fresh so sampling defaults shipped with a model don't leak in."""
        from transformers import GenerationConfig

        base = self.model.generation_config
        eos = base.eos_token_id if base.eos_token_id is not None else self.tokenizer.eos_token_id
        pad = base.pad_token_id
        if pad is None:
            pad = eos[0] if isinstance(eos, list) else eos
        temperature = self.settings.llm.temperature
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": base.top_p or 1.0}
        return GenerationConfig(
            bos_token_id=base.bos_token_id, eos_token_id=eos, pad_token_id=pad,
            max_new_tokens=max_new_tokens, **sampling,
        )  # fmt: skip

    def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_new_tokens: int | None = None,
        stop: threading.Event | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[str]:
        """Yield decoded text pieces as tokens are generated."""
        return self.stream_ids(
            self.prompt_ids(messages), max_new_tokens=max_new_tokens, stop=stop, timeout_s=timeout_s
        )

    def stream_ids(
        self,
        prompt_ids: list[int],
        *,
        max_new_tokens: int | None = None,
        stop: threading.Event | None = None,
        timeout_s: float | None = None,
        ignore_eos: bool = False,
    ) -> Iterator[str]:
        """Like `stream`, from a ready token-id prompt; `ignore_eos` decodes the full length (benchmarks)."""
        from support_bot.llm.backends.hf.scheduler import GenerationRequest

        if self.batcher is None:
            raise ModelNotAvailable(f"{self.name} was closed (its model was replaced); ask again")
        self.sync_adapter()
        room = self.context_window - len(prompt_ids)
        if room <= 0:
            raise InvalidInput(
                f"The prompt takes {len(prompt_ids)} tokens but {self.resolved.name} holds only {self.context_window}"
            )
        if not prompt_ids:
            raise InvalidInput("The prompt is empty")
        wanted = self.settings.llm.max_new_tokens if max_new_tokens is None else max_new_tokens
        timeout = self.settings.llm.timeout_s if timeout_s is None else timeout_s
        request = GenerationRequest(
            prompt_ids=list(prompt_ids),
            max_new_tokens=min(wanted, room),
            deadline=time.monotonic() + timeout,
            stop=stop,
            ignore_eos=ignore_eos,
        )
        return self._pieces(request)

    def _pieces(self, request: Any) -> Iterator[str]:
        from support_bot.llm.backends.hf.detokenize import IncrementalDecoder
        from support_bot.llm.backends.hf.scheduler import Finished

        if request.max_new_tokens <= 0 or (request.stop is not None and request.stop.is_set()):
            return
        batcher = self.batcher
        if batcher is None:
            raise ModelNotAvailable(f"{self.name} was closed (its model was replaced); ask again")
        decoder = IncrementalDecoder(self.tokenizer)
        with self._requests:
            while self._switching:
                self._requests.wait()
            self._submitted.add(request)
        try:
            batcher.submit(request)
            finished = False
            while not finished:
                reason = request.halt_reason(time.monotonic())
                if reason is not None:
                    if not request.admitted.is_set() and time.monotonic() >= request.deadline:
                        raise TimeoutError(f"{self.name} stayed busy with other requests past the generation timeout")
                    if reason == "timeout":
                        # A cut-off answer must not pass for a whole one.
                        raise AnswerTruncated(f"{self.name} did not finish the answer within its time limit")
                    return
                try:
                    # The wait is bounded so a stop or timeout is noticed even while the scheduler is busy.
                    items = [request.output.get(timeout=_POLL_S)]
                except queue.Empty:
                    if not batcher.alive:
                        raise RuntimeError(f"{self.name} stopped unexpectedly") from None
                    continue
                # Drain whatever else is ready: a slow consumer gets bigger pieces instead of falling behind.
                while True:
                    try:
                        items.append(request.output.get_nowait())
                    except queue.Empty:
                        break
                ids: list[int] = []
                for item in items:
                    if isinstance(item, BaseException):
                        raise item
                    if isinstance(item, Finished):
                        if item.reason == "timeout":
                            raise AnswerTruncated(f"{self.name} did not finish the answer within its time limit")
                        finished = True
                        break
                    ids.append(item)
                piece = decoder.push(ids)
                if finished:
                    piece += decoder.flush()
                if piece and not (request.stop is not None and request.stop.is_set()):
                    yield piece
        finally:
            # Also reached when the consumer abandons the stream: the scheduler frees the row at its next step.
            request.cancel()

