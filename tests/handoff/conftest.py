"""Handoff fixtures: a migrated database (SQLite, and PostgreSQL where available) and small factories."""

from __future__ import annotations

from datetime import timedelta

import pytest

from support_bot.core.config import Settings
from support_bot.core.db import migrate, session_scope
from support_bot.models import Conversation, Message, User, utcnow


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, settings) -> Settings:
    if request.param == "postgres":
        settings = settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})
    migrate(settings)
    return settings


def make_agent(
    settings: Settings,
    username: str,
    *,
    role: str = "agent",
    presence: str = "online",
    capacity: int = 5,
    seen_ago_s: float = 0.0,
    display_name: str | None = None,
) -> str:
    """A console user straight in the table (login is not what these tests are about); returns its id."""
    with session_scope(settings) as session:
        user = User(
            username=username,
            display_name=display_name if display_name is not None else username.title(),
            role=role,
            password_hash="not-a-login",
            presence=presence,
            presence_at=utcnow() - timedelta(seconds=seen_ago_s),
            capacity=capacity,
        )
        session.add(user)
        session.flush()
        return user.id


def make_conversation(settings: Settings, *texts: str, status: str = "bot", **fields) -> str:
    """A conversation with these customer messages (each followed by a bot answer)."""
    with session_scope(settings) as session:
        conversation = Conversation(token_hash="x" * 64, status=status, **fields)
        session.add(conversation)
        session.flush()
        for text in texts:
            session.add(Message(conversation_id=conversation.id, role="customer", text=text))
            session.flush()
            session.add(Message(conversation_id=conversation.id, role="bot", text=f"About {text!r}: see our FAQ."))
            session.flush()
        return conversation.id
