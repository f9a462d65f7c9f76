"""widget.js as served (size, caching, content type), what it may never do, and the widget's config endpoint."""

from __future__ import annotations

import gzip
import re

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from support_bot.core.config import Settings
from web.app import create_app
from web.api.widget import WIDGET_JS

LIMIT = 30 * 1024


def test_widget_js_with_its_css_is_at_most_30_kb_gzipped(client):
    source = WIDGET_JS.read_bytes()
    # The CSS lives inside widget.js (in its shadow root): there is no other file to load.
    assert not list(WIDGET_JS.parent.glob("widget*.css"))
    assert len(gzip.compress(source, compresslevel=9)) <= LIMIT
    served = client.get("/widget.js", headers={"Accept-Encoding": "gzip"})
    assert served.headers["content-encoding"] == "gzip"
    assert int(served.headers["content-length"]) <= LIMIT
    assert served.content == source  # the client decompressed it


def test_widget_js_is_served_cacheable_and_revalidated(client):
    res = client.get("/widget.js", headers={"Accept-Encoding": "identity"})
    assert res.status_code == 200
    assert res.headers["content-type"] == "text/javascript; charset=utf-8"
    assert res.headers["cache-control"] == "public, max-age=600"
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.headers["cross-origin-resource-policy"] == "cross-origin"
    assert "content-encoding" not in res.headers
    etag = res.headers["etag"]
    again = client.get("/widget.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert client.get("/widget.js", headers={"If-None-Match": f"W/{etag}"}).status_code == 304
    assert client.get("/widget.js", headers={"If-None-Match": '"stale"'}).status_code == 200


def test_the_cache_lifetime_is_a_setting(widget_settings):
    widget_settings.widget.script_max_age_s = 60
    with TestClient(create_app(widget_settings)) as client:
        assert client.get("/widget.js").headers["cache-control"] == "public, max-age=60"


def test_widget_js_never_turns_text_into_html_and_never_blocks_the_page():
    source = WIDGET_JS.read_text()
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                   "DOMParser", "createContextualFragment", "srcdoc"):
        assert banned not in source, banned
    # Links are built only from http(s) URLs.
    assert re.search(r'u\.protocol === "http:" \|\| u\.protocol === "https:"', source)


def test_config_reflects_the_widget_settings(settings):
    custom = Settings(
        data_dir=settings.data_dir,
        llm={"backend": "fake"},
        chat={"company_name": "Northwind", "bot_name": "Nora"},
        handoff={"button_enabled": False},
        widget={
            "title": "Northwind help", "greeting": "Hello there!", "launcher_label": "Questions?",
            "position": "left", "primary_color": "#0a7d32", "text_color": "#fff",
            "avatar_url": "https://cdn.example/nora.png",
        },
    )
    with TestClient(create_app(custom)) as client:
        res = client.get("/api/widget/config")
        again = client.get("/api/widget/config", headers={"If-None-Match": res.headers["etag"]})
    assert res.status_code == 200
    # Kept by browsers but revalidated on every use, so console changes show on the next page load.
    assert res.headers["cache-control"] == "no-cache"
    assert again.status_code == 304 and again.headers["etag"] == res.headers["etag"] and not again.content
    assert res.json() == {
        "title": "Northwind help", "greeting": "Hello there!", "launcher_label": "Questions?", "position": "left",
        "primary_color": "#0a7d32", "text_color": "#fff", "avatar_url": "https://cdn.example/nora.png",
        "bot_name": "Nora", "company": "Northwind", "handoff_enabled": False, "max_message_chars": 4000,
    }


def test_config_etag_changes_with_the_config(settings):
    with TestClient(create_app(settings)) as client:
        first = client.get("/api/widget/config").headers["etag"]
    other = settings.model_copy(update={"chat": settings.chat.model_copy(update={"bot_name": "Nora"})})
    with TestClient(create_app(other)) as client:
        res = client.get("/api/widget/config", headers={"If-None-Match": first})
    assert res.status_code == 200 and res.json()["bot_name"] == "Nora" and res.headers["etag"] != first


def test_config_defaults(client):
    body = client.get("/api/widget/config").json()
    assert body["title"] == "Acme support"
    assert body["position"] == "right" and body["primary_color"] == "#2457d6" and body["avatar_url"] is None
    assert body["handoff_enabled"] is True and body["greeting"]


@pytest.mark.parametrize(
    "widget",
    [
        {"primary_color": "red; background: url(https://evil.example/x)"},
        {"text_color": "#12345"},
        {"avatar_url": "javascript:alert(1)"},
        {"position": "top"},
    ],
)
def test_unsafe_looks_are_refused(widget):
    with pytest.raises(ValidationError):
        Settings(widget=widget)
