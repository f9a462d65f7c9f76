"""Migration 0006 adds the handoff columns in place: nothing stored before it is lost."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from support_bot.core.db import get_engine, migrate

ROOT = Path(__file__).resolve().parents[2]


def _config(settings) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["settings"] = settings
    return cfg


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrade_to_0006_keeps_conversations_and_messages(request, settings, backend):
    if backend == "postgres":
        settings = settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})
    settings.ensure_dirs()
    command.upgrade(_config(settings), "0005")
    engine = get_engine(settings)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO conversations (id, token_hash, status, created_at, updated_at) "
            "VALUES ('c1', :h, 'queued', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        ), {"h": "x" * 64})
        conn.execute(sa.text(
            "INSERT INTO messages (id, conversation_id, role, text, citations, abstained, created_at) "
            "VALUES ('m1', 'c1', 'customer', 'hello', '[]', false, CURRENT_TIMESTAMP)"
        ))
    migrate(settings)
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT c.status, c.priority, c.bot_turns, c.abstain_streak, m.text, m.private "
            "FROM conversations c JOIN messages m ON m.conversation_id = c.id"
        )).one()
    assert (row[0], row[1], row[2], row[3], row[4], bool(row[5])) == ("queued", 0, 0, 0, "hello", False)
