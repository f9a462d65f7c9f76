"""What the steps of one customer turn share: the events a turn streams and the turn's context."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from support_bot.chat.memory import Memory, Summaries
from support_bot.core.config import Settings
from support_bot.models import Message


@dataclass
class TurnEvent:
    """One server-sent event of a message post: token, done or error (or PENDING, never sent: see below)."""

    event: str
    data: dict[str, Any] = field(default_factory=dict)


# Only when the turn is read a step at a time under a generation Wakeup (llm.base): the model has written nothing new
# yet, and the caller waits on its event loop rather than a thread. Not an event of the API; nothing else sees it.
PENDING = "pending"


@dataclass
class Turn:
    """One customer message being answered: the settings the whole turn runs under, and what its steps know of it."""

    settings: Settings
    # The message as stored: PII redacted when configured. The model and the retriever see this text.
    question: Message
    # The message as the customer wrote it: the guards judge this text.
    original: str
    memory: Memory
    summaries: Summaries
    # Set when the customer went away: generation ends quietly.
    stop: threading.Event | None = None
    # The input guard's note for the prompt when a question is borderline.
    caution: str | None = None

    @property
    def conversation_id(self) -> str:
        return self.question.conversation_id

    def customer_texts(self) -> list[str]:
        """What the customer wrote in this conversation, this message first."""
        return [self.original, *self.memory.customer_texts()]
