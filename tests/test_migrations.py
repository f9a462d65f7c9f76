"""Alembic creates the schema everywhere, and the models match the migrations."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from support_bot.core.db import get_engine, migrate
from support_bot.models import Base


def _check(settings) -> None:
    migrate(settings)
    migrate(settings)  # a second upgrade is a no-op
    engine = get_engine(settings)
    tables = set(inspect(engine).get_table_names())
    assert {"conversations", "messages", "chunks", "sources", "documents", "ingest_jobs", "customers"} <= tables
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"


def test_sqlite_schema_matches_models(settings):
    _check(settings)


@pytest.mark.postgres
def test_postgres_schema_matches_models(settings, postgres_url):
    _check(settings.model_copy(update={"database_url": postgres_url}))


def _alembic(settings, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from support_bot.core import db

    root = Path(db.__file__).resolve().parents[2]
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.attributes["settings"] = settings
    getattr(command, action)(cfg, revision)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_duplicate_replies_keep_the_first_as_the_answer_and_lose_no_message(request, settings, backend):
    if backend == "postgres":
        settings = settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})
    settings.ensure_dirs()
    _alembic(settings, "upgrade", "0008")  # before replies were unique: one question could be answered twice
    engine = get_engine(settings)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO conversations (id, token_hash, status, priority, bot_turns, abstain_streak, "
                          "created_at, updated_at) VALUES ('c', 'h', 'bot', 0, 0, 0, :t, :t)"), {"t": "2026-01-01"})
        rows = [("q1", "customer", None), ("a1", "bot", "q1"), ("a2", "bot", "q1"), ("q2", "customer", None),
                ("b1", "bot", "q2"), ("a3", "bot", "q1")]
        for seq, (mid, role, reply_to) in enumerate(rows, start=1):
            conn.execute(
                text("INSERT INTO messages (seq, id, conversation_id, role, text, reply_to_id, citations, abstained, "
                     "private, created_at) VALUES (:seq, :id, 'c', :role, :body, :reply_to, '[]', false, false, :t)"),
                {"seq": seq, "id": mid, "role": role, "body": mid, "reply_to": reply_to, "t": "2026-01-01"},
            )
    migrate(settings)
    with engine.begin() as conn:
        links = dict(conn.execute(text("SELECT id, reply_to_id FROM messages")).all())
    assert links == {"q1": None, "a1": "q1", "a2": None, "q2": None, "b1": "q2", "a3": None}
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE messages SET reply_to_id = 'q1' WHERE id = 'a2'"))
    _alembic(settings, "downgrade", "0008")
    with engine.begin() as conn:
        conn.execute(text("UPDATE messages SET reply_to_id = 'q1' WHERE id = 'a2'"))
