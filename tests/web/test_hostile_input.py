"""Hostile input on the public API answers 4xx with a clear message, never 500; limits count only what the
conversation's own customer sends."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from support_bot.core.security import sign_customer_id
from tests.web.helpers import new_conversation
from web.app import create_app

SECRET = "s3cret-for-tests-only"
# Event ids are PostgreSQL integer keys: the largest one a client may name (web.api.events.MAX_EVENT_ID).
MAX_EVENT_ID = 2**31 - 1
pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_buses")]


@pytest.fixture
def web(console_settings):
    settings = console_settings.model_copy(update={"customer_hmac_secret": SECRET})
    # raise_server_exceptions off: a 500 must show as a 500 here, as a client would see it.
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("signature", ["é" * 64, "😀", "１２３４", sign_customer_id("cust-1", SECRET) + "ä"])
def test_a_non_ascii_signature_gets_a_clear_422(web, signature):
    res = web.post("/api/conversations", json={"customer": {"id": "cust-1", "signature": signature}})
    assert res.status_code == 422, res.text
    assert "hex HMAC-SHA256" in res.json()["detail"]
    good = sign_customer_id("cust-1", SECRET)
    assert web.post("/api/conversations", json={"customer": {"id": "cust-1", "signature": good}}).status_code == 201


def raw_get(client: TestClient, path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict]:
    """GET through the app with header bytes exactly as given (the HTTP client would re-encode non-ASCII ones)."""
    sent: list[dict] = []

    async def call() -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": query, "headers": [(b"host", b"testserver"), *headers],
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "app": client.app,
        }

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await client.app(scope, receive, send)

    client.portal.call(call)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body) if status != 200 else {}


# Header bytes as a client may send them: the server reads them as Latin-1, so b"\xb2" is "²", which str.isdigit()
# takes for a digit and int() refuses.
@pytest.mark.parametrize(
    "value", [b"\xb2", b"\xb9\xb3", b"1\xbd", b"-1", b"1e3", b" 12 34 ", str(MAX_EVENT_ID + 1).encode(), b"9" * 40]
)
def test_a_last_event_id_that_is_not_an_event_id_gets_a_clear_422(web, value):
    conv_id, headers = new_conversation(web)
    auth = headers["Authorization"].encode()
    status, body = raw_get(
        web, f"/api/conversations/{conv_id}/events", b"timeout=0",
        [(b"authorization", auth), (b"last-event-id", value)],
    )
    assert status == 422, body
    assert "Last-Event-ID must be an event id" in body["detail"]


@pytest.mark.parametrize("after", [str(MAX_EVENT_ID + 1), "9" * 40, "-1", "²"])
def test_an_out_of_range_after_gets_a_clear_422(web, after):
    conv_id, headers = new_conversation(web)
    res = web.get(f"/api/conversations/{conv_id}/events", params={"timeout": 0, "after": after}, headers=headers)
    assert res.status_code == 422, res.text
    assert res.json()["detail"].startswith("query.after:")


def test_the_largest_event_id_is_still_a_valid_resume_point(web):
    conv_id, headers = new_conversation(web)
    for kwargs in ({"params": {"timeout": 0, "after": MAX_EVENT_ID}},
                   {"params": {"timeout": 0}, "headers": {"Last-Event-ID": str(MAX_EVENT_ID)}}):
        kwargs["headers"] = {**headers, **kwargs.get("headers", {})}
        assert web.get(f"/api/conversations/{conv_id}/events", **kwargs).status_code == 200


def test_strangers_cannot_use_up_a_conversations_message_allowance(console_settings):
    settings = console_settings.model_copy(
        update={"widget": console_settings.widget.model_copy(update={"messages_per_conversation": 2})}
    )
    with TestClient(create_app(settings)) as client:
        conv_id, headers = new_conversation(client)
        url = f"/api/conversations/{conv_id}/messages"
        # Someone who knows the id but not the token: refused without counting against the conversation.
        for token in ("wrong", "", "x" * 300):
            res = client.post(url, json={"text": "spam"}, headers={"Authorization": f"Bearer {token}"})
            assert res.status_code == 404
        assert [client.post(url, json={"text": "hello"}, headers=headers).status_code for _ in range(2)] == [200, 200]
        refused = client.post(url, json={"text": "hello again"}, headers=headers)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["detail"].startswith("You're sending messages faster than we can handle.")
