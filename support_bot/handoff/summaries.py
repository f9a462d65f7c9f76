"""The handover note agents see in the queue: a model-written summary of what the customer needs, or the customer's
own words when the model adds nothing or fails.
"""

from __future__ import annotations

import logging
from typing import Any

from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.handoff.messages import public_messages, transcript
from support_bot.live import events
from support_bot.llm.prompt import ChatMessage
from support_bot.models import Conversation, Message

log = logging.getLogger(__name__)

AGENT_SUMMARY_INSTRUCTION = (
    "You write a handover note for a support agent who is taking over a chat from the assistant. In one or two short "
    "sentences, say what the customer needs and what is still unresolved. Use only facts from the conversation; do "
    "not greet the customer and do not give advice."
)


def agent_summary_prompt(messages: list[Message], *, previous: str | None = None) -> list[ChatMessage]:
    parts = []
    if previous:
        parts.append(f"Summary of the earlier conversation:\n{previous.strip()}\n")
    parts.append(f"Conversation:\n{transcript(messages)}")
    return [
        ChatMessage(role="system", content=AGENT_SUMMARY_INSTRUCTION),
        ChatMessage(role="user", content="\n".join(parts)),
    ]


def write_agent_summary(settings: Settings, engine: Any, conversation_id: str) -> str | None:
    """Write and store the short problem summary agents see in the queue; the model only reads when it adds value."""
    with session_scope(settings) as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            return None
        rows = public_messages(session, conversation_id)
        previous = conversation.summary
    said = [m.text.strip() for m in rows if m.role == "customer" and m.text.strip()]
    if not said:
        return None
    text = ""
    if len(said) >= settings.handoff.summary_min_customer_messages:
        max_new = settings.handoff.summary_max_tokens
        window = [m for m in rows if m.role in ("customer", "bot", "agent")][-40:]
        messages = agent_summary_prompt(window, previous=previous)
        while len(window) > 2 and engine.prompt_tokens(messages) + max_new > engine.context_window:
            window = window[2:]
            messages = agent_summary_prompt(window, previous=previous)
        try:
            text = engine.generate(messages, max_new_tokens=max_new).strip()
        except Exception as exc:  # noqa: BLE001 - a failed or timed-out model still leaves the agent a summary
            log.warning("agent summary of %s: the model failed (%s); using the customer's words", conversation_id, exc)
            text = ""
    if not text:
        # One message says it all (or the model said nothing): the customer's own words are the summary.
        text = " / ".join(said[-3:])
    text = text[:1000]
    with session_scope(settings) as session:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            return None
        conversation.handoff_summary = text
        events.emit(
            session, conversation_id=conversation_id, kind="summary", audience="console",
            data={"conversation_id": conversation_id, "summary": text},
        )
    return text
