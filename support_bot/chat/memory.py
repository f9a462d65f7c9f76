"""Conversation memory: what a turn remembers (history, rolling summary, notes from the customer's other
conversations), the history window that fits the model's context budget, and the summaries written off the answer's
path."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from support_bot import handoff
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.handoff.messages import SPEAKER, transcript
from support_bot.handoff.summaries import checked_summary
from support_bot.llm.prompt import ChatMessage
from support_bot.models import Conversation, Message

log = logging.getLogger(__name__)

_ROLE_MAP = {"customer": "user", "bot": "assistant", "agent": "assistant"}


def history_messages(messages: Sequence[Message], *, max_turns: int) -> list[ChatMessage]:
    """Earlier customer/bot/agent messages as alternating chat turns, newest `max_turns` pairs."""
    turns: list[ChatMessage] = []
    for msg in messages:
        role = _ROLE_MAP.get(msg.role)
        if role is None or not msg.text.strip():
            continue
        if turns and turns[-1].role == role:
            # Two messages in a row from one side (e.g. an agent and the bot) become one turn.
            turns[-1] = ChatMessage(role=role, content=f"{turns[-1].content}\n{msg.text}")
        else:
            turns.append(ChatMessage(role=role, content=msg.text))
    # A chat prompt starts with the user: drop a leading assistant turn (e.g. a greeting).
    while turns and turns[0].role != "user":
        turns.pop(0)
    # The window must end on an assistant turn so the new question follows it.
    if turns and turns[-1].role == "user":
        turns.pop()
    return turns[-2 * max_turns :] if max_turns > 0 else []


def fit_history(
    history: list[ChatMessage], *, budget_tokens: int, count_tokens: Callable[[list[ChatMessage]], int]
) -> list[ChatMessage]:
    """Drop the oldest user/assistant pairs until the history fits the token budget."""
    window = list(history)
    while window and count_tokens(window) > budget_tokens:
        window = window[2:]
    return window


SUMMARY_INSTRUCTION = (
    "You write short notes for a customer-support team. Summarize the conversation below in at most three short "
    "sentences: what the customer needs, what they were told, and what is still open. Write about the customer in "
    "the third person; do not copy the conversation line by line and do not repeat yourself. Use only facts from the "
    "conversation; do not add advice."
)


def summary_prompt(*, previous: str | None, messages: Sequence[Message]) -> list[ChatMessage]:
    """The prompt that folds newer messages into the previous summary."""
    parts = []
    if previous:
        parts.append(f"Summary so far:\n{previous.strip()}\n")
    parts.append(f"Conversation{' since then' if previous else ''}:\n{transcript(messages)}")
    return [ChatMessage(role="system", content=SUMMARY_INSTRUCTION), ChatMessage(role="user", content="\n".join(parts))]


def needs_summary(messages: Sequence[Message], *, upto_seq: int | None, every: int) -> bool:
    """True once `every` messages are newer than the summary's watermark."""
    if every <= 0:
        return False
    newer = [m for m in messages if m.role in SPEAKER and (upto_seq is None or m.seq > upto_seq)]
    return len(newer) >= every


@dataclass
class Memory:
    """What a turn remembers of its conversation, read once when the turn starts."""

    # The conversation's public messages before the question.
    earlier: list[Message]
    # The newest chat.history_turns of them as chat turns, for the prompt.
    history: list[ChatMessage]
    # How many chat turns there are in all: the summary stands in for those the prompt leaves out.
    complete_turns: int
    summary: str | None
    customer_notes: list[str]
    # The counts behind the too-many-turns and abstain triggers, for this episode with the bot.
    bot_turns: int
    abstain_streak: int

    @property
    def last(self) -> Message | None:
        return self.earlier[-1] if self.earlier else None

    def customer_texts(self) -> list[str]:
        return [m.text for m in self.earlier if m.role == "customer"]


def remember(settings: Settings, question: Message) -> Memory:
    """The remember step: the conversation so far, as the rest of the turn needs it."""
    with session_scope(settings) as session:
        conversation = session.get(Conversation, question.conversation_id)
        earlier = handoff.public_messages(session, question.conversation_id, before_seq=question.seq)
        summary = conversation.summary if conversation else None
        notes = customer_notes(settings, session, conversation) if conversation else []
        bot_turns = conversation.bot_turns if conversation else 0
        abstain_streak = conversation.abstain_streak if conversation else 0
    all_turns = history_messages(earlier, max_turns=len(earlier))
    history = all_turns[-2 * settings.chat.history_turns :] if settings.chat.history_turns > 0 else []
    return Memory(
        earlier=list(earlier), history=history, complete_turns=len(all_turns), summary=summary, customer_notes=notes,
        bot_turns=bot_turns, abstain_streak=abstain_streak,
    )


def customer_notes(settings: Settings, session: Session, conversation: Conversation) -> list[str]:
    """Summaries of the same identified customer's other conversations, newest first."""
    limit = settings.chat.customer_memory_conversations
    if not conversation.customer_id or limit <= 0:
        return []
    rows = session.scalars(
        select(Conversation.summary)
        .where(
            Conversation.customer_id == conversation.customer_id,
            Conversation.id != conversation.id,
            Conversation.summary.is_not(None),
        )
        .order_by(Conversation.updated_at.desc())
        .limit(limit)
    )
    return [r for r in rows if r]


class Summaries:
    """Summaries written off the customer's path, one at a time: a conversation's rolling summary, and the agent's
    note on a chat handed to a person (handoff.write_agent_summary)."""

    def __init__(self, settings: Callable[[], Settings], engine: Callable[[], Any]):
        # Asked for when the work runs: a model or setting changed meanwhile on the settings page applies.
        self._settings = settings
        self._engine = engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="summaries")

    def refresh(self, conversation_id: str, *, force: bool = False) -> str | None:
        """Fold newer messages into the summary with the model once enough came; one failing the check is extractive."""
        settings = self._settings()
        with session_scope(settings) as session:
            conversation = session.get(Conversation, conversation_id)
            if conversation is None:
                return None
            messages = handoff.public_messages(session, conversation_id)
            upto, previous = conversation.summary_upto_seq, conversation.summary
            reason = conversation.handoff_reason
        every = 1 if force else settings.chat.summary_every_messages
        if not messages or not needs_summary(messages, upto_seq=upto, every=every):
            return previous
        newer = [m for m in messages if upto is None or m.seq > upto]
        text = self._engine().generate(
            summary_prompt(previous=previous, messages=newer), max_new_tokens=settings.chat.summary_max_tokens
        ).strip()
        if not text:
            return previous
        # Checked against the whole conversation: the previous summary the model folded in came from it too.
        text = checked_summary(settings, text, messages, previous=previous, reason=reason, what="summary")
        if not text:
            return previous
        with session_scope(settings) as session:
            conversation = session.get(Conversation, conversation_id)
            # A concurrent refresh may have moved the watermark further: keep the newer one.
            if conversation.summary_upto_seq is None or conversation.summary_upto_seq < messages[-1].seq:
                conversation.summary, conversation.summary_upto_seq = text, messages[-1].seq
        return text

    def refresh_later(self, conversation_id: str) -> None:
        self._executor.submit(self._refresh_logged, conversation_id)

    def agent_summary_later(self, conversation_id: str) -> None:
        self._executor.submit(self._agent_summary_logged, conversation_id)

    def wait(self, timeout: float = 120.0) -> None:
        """Wait for the queued work (tests and shutdown)."""
        self._executor.submit(lambda: None).result(timeout)

    def _refresh_logged(self, conversation_id: str) -> None:
        try:
            self.refresh(conversation_id)
        except Exception:
            log.exception("could not refresh the summary of conversation %s", conversation_id)

    def _agent_summary_logged(self, conversation_id: str) -> None:
        try:
            handoff.write_agent_summary(self._settings(), self._engine(), conversation_id)
        except Exception:
            log.exception("could not write the agent summary of conversation %s", conversation_id)
