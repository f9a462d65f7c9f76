"""Production mode refuses to start with the development secrets, from the app factory and from `support-bot serve`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from support_bot.cli import main
from support_bot.core.config import DEV_SECRET, Settings, get_settings
from support_bot.core.errors import ConfigurationError
from web.app import create_app

STRONG = {"admin_token": "t" * 32}
ENV_STRONG = {"SUPPORT_BOT_ADMIN_TOKEN": "t" * 32}


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({}, "SUPPORT_BOT_ADMIN_TOKEN"),
        ({**STRONG, "admin_token": "short"}, "SUPPORT_BOT_ADMIN_TOKEN"),
        ({**STRONG, "admin_token": DEV_SECRET}, "SUPPORT_BOT_ADMIN_TOKEN"),
        # Identified customers are optional; when enabled, their signing secret must be as strong as the rest.
        ({**STRONG, "customer_hmac_secret": "abc"}, "SUPPORT_BOT_CUSTOMER_HMAC_SECRET"),
        ({**STRONG, "customer_hmac_secret": DEV_SECRET}, "SUPPORT_BOT_CUSTOMER_HMAC_SECRET"),
    ],
)
def test_production_settings_refuse_weak_or_default_secrets(values, named):
    with pytest.raises(ValidationError) as info:
        Settings(env="production", **values)
    assert named in str(info.value) and "production" in str(info.value)
    # The same values are fine on a laptop.
    assert Settings(**values).secret_problem() is None


def test_the_app_factory_refuses_production_settings_that_skipped_validation(settings):
    # model_copy(update=...) does not validate: the factory checks again rather than trusting its argument.
    copied = settings.model_copy(update={"env": "production"})
    with pytest.raises(ConfigurationError) as info:
        create_app(copied)
    assert "SUPPORT_BOT_ADMIN_TOKEN" in info.value.detail
    weak_customer = Settings(env="production", **STRONG).model_copy(update={"customer_hmac_secret": "x"})
    with pytest.raises(ConfigurationError, match="SUPPORT_BOT_CUSTOMER_HMAC_SECRET"):
        create_app(weak_customer)


def test_the_app_starts_in_production_with_real_secrets(settings):
    prod = Settings(env="production", customer_hmac_secret="c" * 32, **STRONG)
    with TestClient(create_app(prod), base_url="https://testserver") as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        # The development token is not the admin token any more.
        res = client.get("/api/knowledge/sources", headers={"Authorization": f"Bearer {DEV_SECRET}"})
        assert res.status_code == 401
        assert client.get("/api/knowledge/sources", headers={"Authorization": "Bearer " + "t" * 32}).status_code == 200


def test_api_docs_are_not_served_in_production_unless_asked_for(settings):
    prod = Settings(env="production", customer_hmac_secret="c" * 32, **STRONG)
    with TestClient(create_app(prod), base_url="https://testserver") as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 404, path
    with TestClient(create_app(prod.model_copy(update={"api_docs": True})), base_url="https://testserver") as client:
        assert client.get("/openapi.json").json()["info"]["title"] == "support-bot"
        assert client.get("/docs").status_code == 200
    with TestClient(create_app(settings)) as client:  # development
        assert client.get("/openapi.json").status_code == 200


@pytest.fixture
def served(monkeypatch) -> list:
    """`support-bot serve` up to the point where it would listen: the app it would serve, if it got that far."""
    apps: list = []
    monkeypatch.setattr("web.server.serve", lambda app, **kwargs: apps.append(app))
    return apps


def test_serve_refuses_default_secrets_in_production_with_one_clear_line(monkeypatch, capsys, served):
    monkeypatch.setenv("SUPPORT_BOT_ENV", "production")
    get_settings.cache_clear()
    assert main(["serve", "--port", "8999"]) == 2
    err = capsys.readouterr().err
    assert "error: invalid settings: SUPPORT_BOT_ADMIN_TOKEN must be set to a strong secret" in err
    assert "Traceback" not in err and served == []

    monkeypatch.setenv("SUPPORT_BOT_ADMIN_TOKEN", "short")
    get_settings.cache_clear()
    assert main(["serve", "--port", "8999"]) == 2
    assert "SUPPORT_BOT_ADMIN_TOKEN" in capsys.readouterr().err and served == []


def test_serve_starts_in_production_with_real_secrets(monkeypatch, served):
    monkeypatch.setenv("SUPPORT_BOT_ENV", "production")
    for key, value in ENV_STRONG.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    assert main(["serve", "--port", "8999"]) == 0
    assert len(served) == 1 and served[0].state.settings.env == "production"
