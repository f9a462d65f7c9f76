"""Auth fixtures: a migrated database and cheap argon2id parameters."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from support_bot.ops import auth
from support_bot.core.db import migrate, session_scope

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def fast_hashing(monkeypatch):
    """argon2id with tiny costs: these tests hash many passwords, and what they check does not depend on cost."""
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    monkeypatch.setattr(auth, "_dummy_hash", None)


@pytest.fixture
def db(settings):
    """Settings whose SQLite database has the current schema."""
    migrate(settings)
    return settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db(request, settings):
    """A migrated database on SQLite, then on PostgreSQL."""
    if request.param == "postgres":
        settings = settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})
    migrate(settings)
    return settings


def add_user(settings, username: str, role: str = "agent", password: str = PASSWORD, **kwargs):
    """A user with a known password (no forced change unless asked); returns its id."""
    kwargs.setdefault("must_change_password", False)
    with session_scope(settings) as session:
        user, _ = auth.create_user(session, settings=settings, username=username, role=role, password=password, **kwargs)
        return user.id
