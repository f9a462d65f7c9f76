"""CORS on the public chat API: the allowed sites only, never the console, never with credentials."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from support_bot.core.config import Settings
from tests.widget.conftest import ALLOWED, OTHER
from web.app import create_app
from web.middleware import public_api


def preflight(client: TestClient, path: str, origin: str, method: str = "POST"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type,last-event-id",
        },
    )


def test_an_allowed_site_may_call_the_public_api(client):
    res = preflight(client, "/api/conversations", ALLOWED)
    assert res.status_code == 200
    assert res.headers["access-control-allow-origin"] == ALLOWED
    allowed_headers = res.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "last-event-id"} <= {h.strip() for h in allowed_headers.split(",")}
    # The API authenticates with bearer tokens: cookies are never invited along.
    assert "access-control-allow-credentials" not in res.headers

    created = client.post("/api/conversations", json={}, headers={"Origin": ALLOWED})
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == ALLOWED
    assert "Origin" in created.headers["vary"]
    # The widget reads Retry-After on a 429.
    assert "retry-after" in created.headers["access-control-expose-headers"].lower()
    conv = created.json()
    auth = {"Authorization": f"Bearer {conv['token']}", "Origin": ALLOWED}
    stream = client.post(f"/api/conversations/{conv['id']}/messages", json={"text": "hello"}, headers=auth)
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["access-control-allow-origin"] == ALLOWED
    events = client.get(f"/api/conversations/{conv['id']}/events?timeout=0", headers=auth)
    assert events.headers["access-control-allow-origin"] == ALLOWED
    config = client.get("/api/widget/config", headers={"Origin": ALLOWED})
    assert config.headers["access-control-allow-origin"] == ALLOWED


def test_another_site_gets_no_cors_headers(client):
    res = preflight(client, "/api/conversations", OTHER)
    assert res.status_code == 400
    assert "access-control-allow-origin" not in res.headers
    created = client.post("/api/conversations", json={}, headers={"Origin": OTHER})
    # Answered (the server cannot stop a non-browser client), but a browser withholds it from the other site.
    assert "access-control-allow-origin" not in created.headers
    assert "access-control-allow-origin" not in client.get("/api/widget/config", headers={"Origin": OTHER}).headers


def test_the_console_and_admin_apis_never_get_cors_headers(client):
    for path in ("/api/console/me", "/api/knowledge/sources"):
        res = client.get(path, headers={"Origin": ALLOWED})
        assert "access-control-allow-origin" not in res.headers, path
        assert "access-control-allow-origin" not in preflight(client, path, ALLOWED, "GET").headers, path


def test_a_rate_limited_answer_is_readable_by_the_allowed_site(widget_settings):
    widget_settings.widget.conversations_per_ip = 1
    with TestClient(create_app(widget_settings)) as client:
        client.post("/api/conversations", json={}, headers={"Origin": ALLOWED})
        refused = client.post("/api/conversations", json={}, headers={"Origin": ALLOWED})
        assert refused.status_code == 429
        assert refused.headers["access-control-allow-origin"] == ALLOWED


def test_a_star_allows_every_site(widget_settings):
    widget_settings.widget.allowed_origins = ["*"]
    with TestClient(create_app(widget_settings)) as client:
        res = client.get("/api/widget/config", headers={"Origin": OTHER})
        assert res.headers["access-control-allow-origin"] == "*"


def test_no_site_is_allowed_by_default(settings):
    assert settings.widget.allowed_origins == []
    with TestClient(create_app(settings)) as client:
        assert "access-control-allow-origin" not in client.get("/api/widget/config", headers={"Origin": ALLOWED}).headers


def test_allowed_origins_are_checked_and_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("SUPPORT_BOT_WIDGET__ALLOWED_ORIGINS", '["https://Shop.example/", "http://127.0.0.1:8080"]')
    assert Settings().widget.allowed_origins == ["https://shop.example", "http://127.0.0.1:8080"]
    for bad in ("shop.example", "https://shop.example/path", "ftp://shop.example"):
        with pytest.raises(ValidationError, match="is not an origin"):
            Settings(widget={"allowed_origins": [bad]})


def refusals(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name == "web.middleware.public_api" and r.levelno == logging.WARNING
    ]


def test_a_refused_site_is_logged_once_with_its_origin_and_the_setting(client, caplog):
    caplog.set_level(logging.WARNING, logger="web.middleware.public_api")
    for _ in range(3):
        assert preflight(client, "/api/conversations", OTHER).status_code == 400
        client.get("/api/widget/config", headers={"Origin": OTHER})
    [line] = refusals(caplog)
    assert OTHER in line and "SUPPORT_BOT_WIDGET__ALLOWED_ORIGINS" in line
    # Allowed sites, this server's own pages and requests with no Origin at all are not refusals.
    client.get("/api/widget/config", headers={"Origin": ALLOWED})
    client.post("/api/conversations", json={}, headers={"Origin": "http://testserver"})
    client.get("/api/widget/config")
    # Nor is anything outside the public API.
    client.get("/api/console/me", headers={"Origin": "https://third.example"})
    assert refusals(caplog) == [line]
    # Another refused site gets its own line.
    client.get("/api/widget/config", headers={"Origin": "https://third.example"})
    assert [OTHER in m for m in refusals(caplog)] == [True, False]


def test_refusals_cannot_flood_the_log(client, caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="web.middleware.public_api")
    monkeypatch.setattr(public_api, "MAX_LOGGED_ORIGINS", 3)
    for n in range(10):
        client.get("/api/widget/config", headers={"Origin": f"https://site{n}.example"})
    lines = refusals(caplog)
    assert len(lines) == 4 and "further ones are not logged" in lines[-1]
