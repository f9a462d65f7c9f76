"""Events fixtures: conversations to attach events to, buses closed around each test, and the test Redis as the bus."""

from __future__ import annotations

import uuid

import pytest

from support_bot.chat.store import start_conversation
from support_bot.core.config import Settings
from support_bot.core.db import session_scope


@pytest.fixture(autouse=True)
def fresh_buses(fresh_buses):
    """The shared fixture (tests/conftest.py) for every test here."""


@pytest.fixture
def redis_settings(db, redis_url) -> Settings:
    """The migrated database with the test Redis as the bus, on channels no other test run shares."""
    events = db.events.model_copy(update={"channel_prefix": f"sbtest-{uuid.uuid4().hex[:10]}:"})
    return db.model_copy(update={"redis_url": redis_url, "events": events})


def new_conversation(settings: Settings) -> str:
    with session_scope(settings) as session:
        conversation, _token = start_conversation(session=session, settings=settings)
        return conversation.id
