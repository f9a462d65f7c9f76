"""The engine protocol every backend implements, and `guarded_stream`, which enforces a caller's deadlines on any of
them and lets an event loop wait for the next piece instead of a thread (`Wakeup`)."""

from __future__ import annotations

import asyncio
import contextvars
import queue
import re
import threading
import time
from collections.abc import Iterator
from typing import Protocol, TypeVar, runtime_checkable

from support_bot.core.errors import ModelTimeout
from support_bot.core.threads import run_below_event_loop
from support_bot.llm.prompt import ChatMessage

T = TypeVar("T")


class AnswerTruncated(ModelTimeout):
    """The time limit passed after part of the answer was written: what came is not the whole answer."""


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
        """Yield the answer in pieces; ends quietly when `stop` is set, and raises ModelTimeout when `timeout_s`
        passes (AnswerTruncated once some of the answer came), so a cut-off answer never passes for a whole one."""
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
_BREAK = re.compile(r"[.!?\n]")

# What guarded_stream yields, while a Wakeup is in effect, when the model has written nothing new yet: no text, and a
# moment for the caller to wait on its event loop (Wakeup.wait) instead of holding a thread until the next piece.
PENDING = ""

_current_wakeup: contextvars.ContextVar[Wakeup | None] = contextvars.ContextVar("generation_wakeup", default=None)


class Wakeup:
    """A generation's reader driven a step at a time from an asyncio event loop, never blocking between pieces.

    `step(iterator)` (on a worker thread) runs the iterator to its next item with this wakeup in effect: a
    guarded_stream inside then yields PENDING instead of waiting, and its generation thread calls `notify` as the next
    piece arrives. `wait()` (on the loop) returns then, or once the reader's own deadline is due, whichever is first.
    One reader at a time; create it on the event loop that waits on it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._event = asyncio.Event()
        # Set by the reader when it is about to yield PENDING; the generation thread wakes the loop only then.
        self._armed = False
        # When the reader must look again even without a piece (its first-piece or total deadline), monotonic.
        self.until: float | None = None

    def arm(self, until: float) -> None:
        """The reader found nothing: wake the loop at the next piece, or at `until`."""
        self.until = until
        self._armed = True

    def disarm(self) -> None:
        self._armed = False

    def notify(self) -> None:
        """A piece (or the end) is ready: from any thread; only the first after `arm` costs a wake-up."""
        if not self._armed:
            return
        self._armed = False
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    async def wait(self, settle_s: float = 0.0) -> None:
        """Until a piece is ready or the reader's deadline is due; then `settle_s` more, so pieces arrive in batches."""
        until = self.until
        timeout = None if until is None else max(0.0, until - time.monotonic())
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        if settle_s > 0:
            left = settle_s if until is None else min(settle_s, until - time.monotonic())
            if left > 0:
                await asyncio.sleep(left)
        self._event.clear()

    def step(self, iterator: Iterator[T]) -> T:
        """`next(iterator)` with this wakeup in effect; raises StopIteration at its end. Run it on a worker thread."""
        token = _current_wakeup.set(self)
        try:
            return next(iterator)
        finally:
            _current_wakeup.reset(token)


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
    first piece came within `first_token_timeout_s`, and AnswerTruncated once the answer is not complete within
    `timeout_s`, and tells the engine to stop. Errors of the engine pass through; a set `stop` ends the stream
    quietly, as before. Read under a Wakeup (Wakeup.step), it yields PENDING instead of blocking.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    first_wait = min(timeout_s, first_token_timeout_s) if first_token_timeout_s else timeout_s
    halt = threading.Event()
    pieces: queue.Queue = queue.Queue()
    # The wakeup of the step reading now, if any: the generation thread tells it when there is something to read.
    reader: list[Wakeup | None] = [None]

    def put(item: object, *, wake: bool = True) -> None:
        # Stamped: the deadlines judge when the model wrote a piece, not when a busy reader got round to it.
        pieces.put((time.monotonic(), item))
        wakeup = reader[0]
        if wake and wakeup is not None:
            wakeup.notify()

    def produce() -> None:
        # Reading the engine wakes this thread for every piece: hundreds of them at once must not delay the loop.
        run_below_event_loop()
        previous = None
        try:
            for piece in engine.stream(
                messages, max_new_tokens=max_new_tokens, stop=halt, timeout_s=timeout_s + _BACKSTOP_S
            ):
                if halt.is_set():
                    break
                if piece:
                    # A reader on an event loop is woken for the first piece and where a sentence or line may have
                    # ended (the piece after an end mark shows whether it did): readers act on whole sentences, so
                    # the pieces between are read in one go with the next of those.
                    put(piece, wake=previous is None or bool(_BREAK.search(previous) or _BREAK.search(piece)))
                    previous = piece
        except Exception as exc:  # handed to the reader, which raises it in the caller's thread
            put(exc)
        finally:
            put(_END)

    threading.Thread(target=produce, name="generation", daemon=True).start()
    first = True

    def late() -> ModelTimeout:
        if first:
            return ModelTimeout(f"the model sent nothing within {first_wait:g} seconds")
        return AnswerTruncated(f"the model did not finish its answer within {timeout_s:g} seconds")

    try:
        while True:
            if stop is not None and stop.is_set():
                return
            now = time.monotonic()
            limit = started + first_wait if first else deadline
            wakeup = _current_wakeup.get()
            if wakeup is not None:
                # Armed before looking, so a piece queued right after the look still wakes the loop.
                reader[0] = wakeup
                wakeup.arm(limit)
                try:
                    at, item = pieces.get_nowait()
                except queue.Empty:
                    if now >= limit:
                        raise late() from None
                    yield PENDING
                    continue
                wakeup.disarm()
            else:
                try:
                    at, item = pieces.get(timeout=max(0.0, min(limit - now, _POLL_S)))
                except queue.Empty:
                    if time.monotonic() >= limit:
                        raise late() from None
                    continue
            # The end of a started answer may come late (its last piece did not); anything else past the limit may not.
            if at > limit and (first or item is not _END):
                raise late()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            first = False
            yield item
    finally:
        # Also reached when the caller abandons the stream: the engine stops at its next piece or its own timeout.
        halt.set()
        reader[0] = None
