"""Fixtures for knowledge tests: a migrated throw-away database and the FAQ fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from support_bot.config import Settings
from support_bot.db import migrate

FAQ = Path(__file__).resolve().parent.parent / "fixtures" / "northwind_faq.csv"


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
