"""Widget fixtures: an app whose public API allows one other site, with the input guard off (not under test)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from support_bot.core.config import Settings
from web.app import create_app

ALLOWED = "https://shop.example"
OTHER = "https://evil.example"


@pytest.fixture
def widget_settings(settings) -> Settings:
    return Settings(
        data_dir=settings.data_dir,
        llm={"backend": "fake"},
        safety={"enabled": False},
        widget={"allowed_origins": [ALLOWED]},
    )


@pytest.fixture
def client(widget_settings) -> TestClient:
    with TestClient(create_app(widget_settings)) as c:
        yield c
