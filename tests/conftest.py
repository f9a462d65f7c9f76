"""Shared fixtures: every test gets a throw-away data dir and its own Settings."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from support_bot.core.config import Settings, get_settings
from support_bot.core.db import dispose_engines
from support_bot.llm.registry import reset_engines

FIXTURES = Path(__file__).parent / "fixtures"
# A small FAQ of a fictional bike shop, shared by the knowledge and ingest tests.
FAQ = FIXTURES / "northwind_faq.csv"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _service_url(env_var: str, default: str, port: int) -> str:
    """The URL of a test service; required (fail) when its env var is set, optional (skip) otherwise."""
    url = os.environ.get(env_var)
    if url:
        if not _reachable(url, port):
            pytest.fail(f"{env_var}={url} is set but not reachable")
        return url
    if not _reachable(default, port):
        pytest.skip(f"no service at {default} (set {env_var} to require one)")
    return default


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Point the app at a fresh data dir; nothing leaks between tests."""
    for key in list(os.environ):
        if key.startswith("SUPPORT_BOT_") and not key.startswith("SUPPORT_BOT_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SUPPORT_BOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SUPPORT_BOT_LLM__BACKEND", "fake")
    get_settings.cache_clear()
    reset_engines()
    yield
    get_settings.cache_clear()
    reset_engines()
    dispose_engines()


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = Settings()
    s.ensure_dirs()
    return s


@pytest.fixture(scope="session")
def embedder():
    """The real embedding model, loaded once for the whole test session."""
    from support_bot.knowledge.embedder import get_embedder

    # get_embedder caches per model, so every test's pipeline and retriever reuse this instance.
    return get_embedder(Settings())


@pytest.fixture
def kb(settings: Settings, embedder) -> Settings:
    """Settings whose database has the current schema."""
    from support_bot.core.db import migrate

    migrate(settings)
    return settings


@pytest.fixture
def faq_bytes() -> bytes:
    return FAQ.read_bytes()


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    return _service_url("SUPPORT_BOT_TEST_POSTGRES_URL", DEFAULT_PG, 5432)


@pytest.fixture
def postgres_url(postgres_server_url) -> str:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"sbtest_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = postgres_server_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    dispose_engines()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _service_url("SUPPORT_BOT_TEST_REDIS_URL", DEFAULT_REDIS, 6379)
