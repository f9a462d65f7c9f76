"""The engine protocol every backend implements, and `guarded_stream`, which enforces a caller's deadlines on any of them."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from support_bot.core.errors import ModelTimeout
from support_bot.llm.prompt import ChatMessage


@runtime_checkable
class Engine(Protocol):
    """Streams a chat model's answer; all backends (transformers, OpenAI-compatible, fake) look like this."""

    name: str
    context_window: int

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes as message content."""
        ...

    def prompt_tokens(self, messages: list[ChatMessage]) -> int:
        """Tokens the whole prompt for `messages` takes, format and special tokens included."""
        ...

    def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_new_tokens: int | None = None,
        stop: threading.Event | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[str]:
        """Yield the answer in pieces; ends early when `stop` is set or `timeout_s` passes."""
        ...

    def generate(
        self,
        messages: list[ChatMessage],
        *,
        max_new_tokens: int | None = None,
        stop: threading.Event | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """The whole answer at once."""
        ...


class StreamingEngine:
    """Shared by the backends (each defines `stream` and `count_tokens`): `generate` is `stream` joined."""

    # Rough cost of the role markers around each message, for backends without the model's own tokenizer.
    PER_MESSAGE_OVERHEAD = 4

    def approx_prompt_tokens(self, messages: list[ChatMessage]) -> int:
        """Content tokens of every message plus a fixed overhead per message."""
        return sum(self.count_tokens(m.content) + self.PER_MESSAGE_OVERHEAD for m in messages)

    def generate(
        self,
        messages: list[ChatMessage],
        *,
        max_new_tokens: int | None = None,
        stop: threading.Event | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """The whole answer at once."""
        return "".join(self.stream(messages, max_new_tokens=max_new_tokens, stop=stop, timeout_s=timeout_s))


# The engine's own timeout is set this much past the caller's deadline: it only frees the generating thread, while
# the deadline enforced by `guarded_stream` is what the customer sees.
_BACKSTOP_S = 5.0
# How often a waiting reader looks at the caller's stop event.
_POLL_S = 0.1
_END = object()


def guarded_stream(
    engine: Engine,
    messages: list[ChatMessage],
    *,
    timeout_s: float,
    first_token_timeout_s: float | None = None,
    max_new_tokens: int | None = None,
    stop: threading.Event | None = None,
) -> Iterator[str]:
    """The engine's stream with its deadlines enforced here, whatever the backend does meanwhile.

    A backend can hang where its own timeouts do not reach (a server that accepts and then says nothing, a stalled
    socket read, a wedged scheduler). The engine runs on a thread of its own; this reader raises ModelTimeout once no
    first piece came within `first_token_timeout_s`, or the answer is not complete within `timeout_s`, and tells the
    engine to stop. Errors of the engine pass through; a set `stop` ends the stream quietly, as before.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    first_wait = min(timeout_s, first_token_timeout_s) if first_token_timeout_s else timeout_s
    halt = threading.Event()
    pieces: queue.Queue = queue.Queue()

    def produce() -> None:
        try:
            for piece in engine.stream(
                messages, max_new_tokens=max_new_tokens, stop=halt, timeout_s=timeout_s + _BACKSTOP_S
            ):
                if halt.is_set():
                    break
                pieces.put(piece)
        except Exception as exc:  # handed to the reader, which raises it in the caller's thread
            pieces.put(exc)
        finally:
            pieces.put(_END)

    threading.Thread(target=produce, name="generation", daemon=True).start()
    first = True
    try:
        while True:
            if stop is not None and stop.is_set():
                return
            now = time.monotonic()
            limit = started + first_wait if first else deadline
            if now >= limit:
                if first:
                    raise ModelTimeout(f"the model sent nothing within {first_wait:g} seconds")
                raise ModelTimeout(f"the model did not finish its answer within {timeout_s:g} seconds")
            try:
                item = pieces.get(timeout=min(limit - now, _POLL_S))
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            first = False
            yield item
    finally:
        # Also reached when the caller abandons the stream: the engine stops at its next piece or its own timeout.
        halt.set()
