"""A deterministic in-process engine for the fast unit-test layer (backend "fake")."""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Iterator

from support_bot.core.errors import ModelTimeout
from support_bot.llm.base import AnswerTruncated, StreamingEngine
from support_bot.llm.prompt import ChatMessage, validate_messages

_PIECE = re.compile(r"\s*\S+")


class FakeEngine(StreamingEngine):
    """Replies with queued texts, else with a text derived from the last user message; streams word by word."""

    def __init__(self, *, name: str = "fake", context_window: int = 4096, delay_s: float = 0.0) -> None:
        self.name = name
        self.context_window = context_window
        # Seconds to wait before each word, so tests can stop or time out a reply midway.
        self.delay_s = delay_s
        self.calls: list[list[ChatMessage]] = []
        # Pieces handed to readers so far, over all replies: how much a reader let the model write.
        self.pieces_streamed = 0
        self._replies: deque[str] = deque()
        self._lock = threading.Lock()

    def queue_reply(self, text: str) -> None:
        """Use `text` as the next reply (replies are used in the order queued)."""
        with self._lock:
            self._replies.append(text)

    def reply_for(self, messages: list[ChatMessage]) -> str:
        """The default reply when nothing is queued."""
        last_user = next(m.content for m in reversed(messages) if m.role == "user")
        words = last_user.split()
        return f"Fake answer to: {' '.join(words)}" if words else "Fake answer."

    def count_tokens(self, text: str) -> int:
        """Approximate: whitespace-separated words."""
        return len(text.split())

    def prompt_tokens(self, messages: list[ChatMessage]) -> int:
        """Approximate: words of every message plus a fixed overhead per message."""
        return self.approx_prompt_tokens(messages)

    def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_new_tokens: int | None = None,
        stop: threading.Event | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[str]:
        """Yield the reply one word (with its leading whitespace) at a time."""
        validate_messages(messages)
        with self._lock:
            self.calls.append(list(messages))
            reply = self._replies.popleft() if self._replies else None
        if reply is None:
            reply = self.reply_for(messages)
        return self._pieces(reply, max_new_tokens=max_new_tokens, stop=stop, timeout_s=timeout_s)

    def _pieces(
        self, reply: str, *, max_new_tokens: int | None, stop: threading.Event | None, timeout_s: float | None
    ) -> Iterator[str]:
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        for n, piece in enumerate(_PIECE.findall(reply)):
            if max_new_tokens is not None and n >= max_new_tokens:
                return
            if self.delay_s:
                time.sleep(self.delay_s)
            if stop is not None and stop.is_set():
                return
            if deadline is not None and time.monotonic() >= deadline:
                # A cut-off reply must not pass for a whole one (a summary would be stored mid-sentence).
                if n:
                    raise AnswerTruncated(f"{self.name} did not finish its reply within {timeout_s:g} seconds")
                raise ModelTimeout(f"{self.name} sent nothing within {timeout_s:g} seconds")
            with self._lock:
                self.pieces_streamed += 1
            yield piece

