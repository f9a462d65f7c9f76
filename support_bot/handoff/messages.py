"""A conversation's messages: as the APIs and live events show them, as the customer may see them (never internal
notes), as a plain-text transcript for prompts, the system lines that tell what happened to the chat itself, and the
checks typed text must pass.

Used by chat, the queue and the learning loop alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from support_bot.core.config import Settings
from support_bot.core.errors import InvalidInput
from support_bot.handoff.presence import display_names
from support_bot.live import events
from support_bot.models import Message

# How each role is named in a transcript; system events and internal notes are left out.
SPEAKER = {"customer": "Customer", "bot": "Assistant", "agent": "Agent"}

# What happened to the chat itself, as the customer reads it: stored with role "system" (API.md's roles), so the
# history shows it again after a reload; never given to the model (memory and prompts read SPEAKER roles only).
JOINED_TEXT = "{agent} joined the chat."
RESOLVED_TEXT = "This conversation was resolved."
BACK_TO_BOT_TEXT = "You are chatting with the assistant again."


def message_payload(msg: Message, *, author: str | None = None) -> dict[str, Any]:
    """A message as the APIs and live events show it (API.md's fields, plus author and private when set)."""
    data: dict[str, Any] = {
        "id": msg.id,
        "role": msg.role,
        "text": msg.text,
        "created_at": msg.created_at.isoformat() if msg.created_at else None,
        "citations": msg.citations or [],
        "abstained": bool(msg.abstained),
        "related": msg.related or [],
    }
    if msg.role == "agent":
        data["author"] = author
    if msg.private:
        data["private"] = True
    return data


def emit_message(session: Session, msg: Message, *, author: str | None = None) -> None:
    """Store a live event for a new message: a note for the console only, anything else for the customer too."""
    data = {**message_payload(msg, author=author), "conversation_id": msg.conversation_id}
    events.emit(
        session, conversation_id=msg.conversation_id, kind="note" if msg.private else "message", data=data,
        audience="console" if msg.private else "all",
    )


def add_system_line(session: Session, conversation_id: str, text: str) -> Message:
    """Store a line about the chat itself in the conversation and send it live, to the customer and the console."""
    msg = Message(conversation_id=conversation_id, role="system", text=text)
    session.add(msg)
    session.flush()
    emit_message(session, msg)
    return msg


def public_messages(session: Session, conversation_id: str, *, before_seq: int | None = None) -> list[Message]:
    """The conversation's messages without internal notes, oldest first (optionally only those before a seq)."""
    q = select(Message).where(Message.conversation_id == conversation_id, Message.private.is_(False))
    if before_seq is not None:
        q = q.where(Message.seq < before_seq)
    return list(session.scalars(q.order_by(Message.seq)))


def customer_messages(session: Session, conversation_id: str) -> list[dict[str, Any]]:
    """What the customer may see of the conversation, oldest first: never internal notes."""
    rows = public_messages(session, conversation_id)
    names = display_names(session, {m.author_id for m in rows})
    return [message_payload(m, author=names.get(m.author_id)) for m in rows]


def transcript(messages: Sequence[Message]) -> str:
    """The messages as "Customer: ..." / "Assistant: ..." / "Agent: ..." lines, for prompts that read a chat."""
    return "\n".join(f"{SPEAKER[m.role]}: {m.text.strip()}" for m in messages if m.role in SPEAKER and m.text.strip())


def validate_text(settings: Settings, text: str, *, what: str = "message") -> str:
    """Typed text stripped; InvalidInput when it is empty or longer than a chat message may be."""
    text = (text or "").strip()
    if not text:
        raise InvalidInput(f"the {what} is empty")
    limit = settings.chat.max_message_chars
    if len(text) > limit:
        raise InvalidInput(f"the {what} is too long ({len(text)} characters; the limit is {limit})")
    return text
