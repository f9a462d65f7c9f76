"""The agent console's HTML pages (queue, conversation) and the chat panel's handoff controls."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from support_bot.chat.store import start_conversation
from support_bot.core.db import session_scope
from tests.conftest import add_user
from tests.web.console_html import ConsolePage
from tests.web.helpers import login
from web.app import create_app

# Logging in is not what these tests check.
pytestmark = pytest.mark.usefixtures("fast_hashing")


class Page(ConsolePage):
    """A console page plus the scripts and stylesheets it loads."""

    def __init__(self, html: str):
        self.scripts: list[str] = []
        self.styles: list[str] = []
        super().__init__(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        if tag == "link" and a.get("rel") == "stylesheet":
            self.styles.append(a.get("href") or "")
        super().handle_starttag(tag, attrs)


@pytest.fixture
def app(db):
    for name, role in (("alice", "agent"), ("olga", "ops"), ("ada", "admin")):
        add_user(db, name, role)
    return create_app(db)


def client_for(app, username: str | None) -> tuple[TestClient, dict]:
    """A client of its own, logged in as username (none: anonymous); /me of the login."""
    client = TestClient(app, follow_redirects=False)
    return client, login(client, username) if username else {}


def new_conversation_id(settings) -> str:
    with session_scope(settings) as session:
        conversation, _ = start_conversation(session=session, settings=settings)
        return conversation.id


def test_pages_need_a_login_and_the_agent_or_admin_role(app, settings):
    conv_id = new_conversation_id(settings)
    for path in ("/console/queue", f"/console/conversations/{conv_id}"):
        anonymous, _ = client_for(app, None)
        res = anonymous.get(path)
        assert res.status_code == 303
        assert res.headers["location"] == "/console/login?next=" + path
        ops, _ = client_for(app, "olga")
        res = ops.get(path)
        assert res.status_code == 403 and "agent" in res.json()["detail"]
        for name in ("alice", "ada"):
            client, _ = client_for(app, name)
            res = client.get(path)
            assert res.status_code == 200, (name, path)
            assert res.headers["cache-control"] == "no-store"


def test_queue_page_has_the_live_queue_presence_and_the_sessions_csrf_token(app):
    client, me = client_for(app, "alice")
    page = Page(client.get("/console/queue").text)
    app_el = page.by_id["console-app"]
    assert app_el.attrs["data-page"] == "queue"
    assert app_el.attrs["data-user-id"] == me["id"]
    assert {"queue-list", "queue-empty", "mine-list", "presence", "live-status", "console-error"} <= page.by_id.keys()
    assert page.meta["csrf-token"] == me["csrf_token"]
    assert page.form(form_id="logout-form").fields["csrf_token"] == me["csrf_token"]
    # The shared helpers come first: console.js uses them.
    assert [src.rsplit("/", 1)[-1] for src in page.scripts] == ["console_common.js", "console.js"]
    assert any(href.endswith("/static/inbox.css") for href in page.styles)
    assert "Queue" in page.nav_labels()
    for asset in ("/static/console_common.js", "/static/console.js", "/static/inbox.css"):
        assert client.get(asset).status_code == 200


def test_conversation_page_has_transcript_reply_note_and_actions(app, settings):
    conv_id = new_conversation_id(settings)
    client, _ = client_for(app, "ada")
    page = Page(client.get(f"/console/conversations/{conv_id}").text)
    assert page.by_id["console-app"].attrs["data-conversation-id"] == conv_id
    assert {
        "transcript", "customer-typing", "reply-form", "reply-text", "canned-picker", "note-form", "note-text",
        "conv-status", "conv-reason", "conv-summary", "conv-sources", "claim-btn", "transfer-form", "transfer-agent",
        "return-btn", "resolve-btn", "presence",
    } <= page.by_id.keys()
    assert [src.rsplit("/", 1)[-1] for src in page.scripts] == ["console_common.js", "console.js"]


def test_unknown_conversation_is_a_404_page_and_its_id_is_escaped(app):
    client, _ = client_for(app, "alice")
    odd = '"><img src=x onerror=window.x=1>'
    res = client.get("/console/conversations/" + odd)
    assert res.status_code == 404
    page = Page(res.text)
    # The id is an attribute value, not markup: the parser sees it whole and no element was injected.
    assert page.by_id["console-app"].attrs["data-conversation-id"] == odd
    assert "&lt;img" in res.text and "<img" not in res.text
    assert page.scripts == []
    assert "transcript" not in page.by_id


def test_demo_chat_panel_offers_a_person_an_offline_form_and_a_rating(app):
    client, _ = client_for(app, None)
    page = Page(client.get("/").text)
    assert {
        "chat-handoff-btn", "chat-handoff", "chat-handoff-status", "chat-offline", "chat-offline-message",
        "chat-offline-email", "chat-rating", "chat-rating-comment", "chat-rating-send", "chat-typing",
    } <= page.by_id.keys()
    # Hidden until the conversation is handed off or resolved.
    for element_id in ("chat-handoff", "chat-offline", "chat-rating", "chat-typing"):
        assert "hidden" in page.by_id[element_id].attrs
    assert page.by_id["chat-offline-email"].attrs["type"] == "email"
    assert client.get("/static/chat.css").status_code == 200
