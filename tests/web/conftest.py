"""Web fixtures: an app over a seeded knowledge base, on SQLite or PostgreSQL; settings for the console's tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from support_bot.core.config import Settings
from support_bot.core.db import migrate
from support_bot.llm.registry import get_engine
from web.app import create_app

DEMO_FAQ = Path(__file__).resolve().parents[2] / "examples" / "demo-faq.csv"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app_settings(request, settings) -> Settings:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        settings = settings.model_copy(update={"database_url": url})
    migrate(settings)
    from ingest.pipeline import ingest_path

    job = ingest_path(settings=settings, path=DEMO_FAQ, source_name="demo-faq")
    assert job.status == "succeeded", job.error
    return settings


@pytest.fixture
def client(app_settings) -> TestClient:
    with TestClient(create_app(app_settings)) as c:
        yield c


@pytest.fixture
def fake_engine(app_settings):
    engine = get_engine(app_settings)
    engine.calls.clear()
    return engine


@pytest.fixture
def console_settings(request, settings) -> Settings:
    """A migrated database (SQLite unless parametrized); guards off: the console tests do not chat with the bot."""
    settings = settings.model_copy(update={"safety": settings.safety.model_copy(update={"enabled": False})})
    if getattr(request, "param", "sqlite") == "postgres":
        settings = settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})
    migrate(settings)
    return settings


# A test with this mark runs on SQLite, then on PostgreSQL, through console_settings.
BOTH_DATABASES = pytest.mark.parametrize(
    "console_settings", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
