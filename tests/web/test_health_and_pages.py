"""Health probes and the demo page."""

from __future__ import annotations

import time
from html.parser import HTMLParser

import pytest


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.scripts: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])


def wait_ready(client, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        res = client.get("/readyz")
        if res.json()["checks"]["model"] != "loading" or time.monotonic() > deadline:
            return res
        time.sleep(0.1)


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    res = wait_ready(client)
    assert res.status_code == 200 and res.json()["checks"] == {"database": "ok", "model": "ok"}


@pytest.mark.parametrize("app_settings", ["sqlite"], indirect=True)
def test_readiness_reports_a_missing_model(app_settings):
    from fastapi.testclient import TestClient

    from web.app import create_app

    settings = app_settings.model_copy(update={"llm": app_settings.llm.model_copy(update={"backend": "transformers"})})
    with TestClient(create_app(settings)) as c:
        res = wait_ready(c)
    assert res.status_code == 503
    assert "support-bot models pull" in res.json()["checks"]["model"]


def test_demo_page_has_a_chat_panel(client):
    res = client.get("/")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    page = _Collector()
    page.feed(res.text)
    assert {"chat", "chat-log", "chat-form", "chat-input", "chat-send"} <= page.ids
    assert any(src.endswith("/static/chat.js") for src in page.scripts)
    assert client.get("/static/chat.js").status_code == 200


class _Icons(HTMLParser):
    def __init__(self):
        super().__init__()
        self.icons: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link" and attrs.get("rel") == "icon":
            self.icons.append(attrs["href"])


def test_favicon_is_served_and_every_kind_of_page_links_it(client):
    res = client.get("/favicon.ico")
    assert res.status_code == 200 and res.headers["content-type"] == "image/svg+xml"
    assert res.content.startswith(b"<svg") and b"</svg>" in res.content
    # The demo page (base.html) and the console's login page (console/_base.html) cover both base templates.
    for path in ("/", "/console/login"):
        page = _Icons()
        page.feed(client.get(path).text)
        assert len(page.icons) == 1, path
        linked = client.get(page.icons[0])
        assert linked.status_code == 200 and linked.headers["content-type"].startswith("image/svg+xml")
        assert linked.content == res.content
