"""Conversation memory: the history window that fits the model's context budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from support_bot.llm.prompt import ChatMessage
from support_bot.models import Message

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
    "sentences: what the customer needs, what they were told, and what is still open. Use only facts from the "
    "conversation; do not add advice."
)
_SPEAKER = {"customer": "Customer", "bot": "Assistant", "agent": "Agent"}


def transcript(messages: Sequence[Message]) -> str:
    return "\n".join(f"{_SPEAKER[m.role]}: {m.text.strip()}" for m in messages if m.role in _SPEAKER and m.text.strip())


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
    newer = [m for m in messages if m.role in _SPEAKER and (upto_seq is None or m.seq > upto_seq)]
    return len(newer) >= every
