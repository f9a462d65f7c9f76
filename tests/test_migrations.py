"""Alembic creates the schema everywhere, and the models match the migrations."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

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
