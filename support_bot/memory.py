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
