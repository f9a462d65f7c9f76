"""Shared fixtures: every test gets a throw-away data dir and its own Settings; databases, console users, buses."""

from __future__ import annotations

import os
import socket
import uuid
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlparse

import pytest

from support_bot.core.config import Settings, get_settings
from support_bot.core.db import dispose_engines, migrate, session_scope
from support_bot.llm.registry import reset_engines

FIXTURES = Path(__file__).parent / "fixtures"
# A small FAQ of a fictional bike shop, shared by the knowledge and ingest tests.
FAQ = FIXTURES / "northwind_faq.csv"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
# The password of every console user the tests make (strong enough for the password rules).
PASSWORD = "correct horse battery"


# Seconds a test of each kind takes, roughly, for files not in _FILE_SECONDS.
_MARK_SECONDS = {"browser": 20.0, "slow": 10.0, "faults": 10.0, "postgres": 2.0, "redis": 2.0}
# The dearest files, measured (seconds, setups included; a full parallel run on this 2-core machine under other load):
# one of them starting last would run alone at the end while the other processes sit idle.
_FILE_SECONDS = {
    "tests/ingest/test_large_upload.py": 260,
    "tests/e2e/test_adapted_answers_browser.py": 210,
    "tests/e2e/test_handoff_story.py": 185,
    "tests/adapt/test_activation.py": 165,
    "tests/e2e/test_browser_chat.py": 165,
    "tests/faults/test_worker_sigkill.py": 145,
    "tests/ingest/test_pipeline.py": 105,
    "tests/security/test_schemathesis.py": 80,
    "tests/e2e/test_learning_browser.py": 75,
    "tests/e2e/test_real_model_api.py": 70,
    "tests/knowledge/test_retriever.py": 65,
}


def pytest_collection_modifyitems(config, items):
    """Dearest files first (make test runs a file per process with --no-loadscope-reorder): the last files to start
    are then short ones, so the processes finish close together."""
    estimate: dict[Path, float] = defaultdict(float)
    for item in items:
        estimate[item.path] += max((c for m, c in _MARK_SECONDS.items() if item.get_closest_marker(m)), default=0.5)
    root = Path(config.rootpath)

    def seconds(path: Path) -> float:
        known = _FILE_SECONDS.get(path.relative_to(root).as_posix()) if path.is_relative_to(root) else None
        return known if known is not None else estimate[path]

    items.sort(key=lambda item: -seconds(item.path))  # stable: each file's own tests keep their order


def free_port() -> int:
    """A loopback port free now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@pytest.fixture
def db(settings: Settings) -> Settings:
    """Settings whose SQLite database has the current schema."""
    migrate(settings)
    return settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db(request, settings: Settings) -> Settings:
    """A migrated database on SQLite, then on a fresh PostgreSQL one."""
    if request.param == "postgres":
        settings = settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})
    migrate(settings)
    return settings


@pytest.fixture(scope="session")
def embedder():
    """The real embedding model, loaded once for the whole test session."""
    from support_bot.knowledge.embedder import get_embedder

    # get_embedder caches per model, so every test's pipeline and retriever reuse this instance.
    return get_embedder(Settings())


@pytest.fixture
def kb(settings: Settings, embedder) -> Settings:
    """Settings whose database has the current schema."""
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


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own, which the test may stop and restart; skips without redis-server."""
    from tests.live.redis_server import private_redis

    yield from private_redis(tmp_path)


@pytest.fixture
def fresh_buses():
    """No event bus open when the test starts, and none left open after it."""
    from support_bot.live.events import close_buses

    close_buses()
    yield
    close_buses()


# -- console users ----------------------------------------------------------------------------------------------


@pytest.fixture
def fast_hashing(monkeypatch):
    """argon2id with tiny costs, for tests that hash or check passwords but do not test the hashing cost."""
    from argon2 import PasswordHasher

    from support_bot.ops import auth

    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    monkeypatch.setattr(auth, "_dummy_hash", None)


def add_user(
    settings: Settings, username: str, role: str = "agent", display_name: str = "", *, password: str = PASSWORD,
    **kwargs,
) -> str:
    """A console user who logs in with `password` (no forced change unless asked); returns its id."""
    from support_bot.ops import auth

    kwargs.setdefault("must_change_password", False)
    with session_scope(settings) as session:
        user, _ = auth.create_user(
            session, settings=settings, username=username, role=role, password=password, display_name=display_name,
            **kwargs,
        )
        return user.id
