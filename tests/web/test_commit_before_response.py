"""What a response acknowledges is committed before the client reads it (found under load: 404 right after 201)."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import select

from support_bot.db import migrate, session_scope
from support_bot.models import Conversation, Feedback, Message
from web.app import create_app


class _CheckAtSend:
    """ASGI wrapper: when the response body goes out, look the acknowledged row up through another connection."""

    def __init__(self, app, settings, lookup):
        self.app, self.settings, self.lookup = app, settings, lookup
        self.seen: list[bool] = []

    async def __call__(self, scope, receive, send):
        async def checking_send(message):
            if message["type"] == "http.response.body" and message.get("body"):
                self.seen.append(self.lookup(self.settings, message["body"]))
            await send(message)

        await self.app(scope, receive, checking_send if scope["type"] == "http" else send)


def _conversation_exists(settings, body: bytes) -> bool:
    conv_id = json.loads(body)["id"]
    with session_scope(settings) as session:
        return session.get(Conversation, conv_id) is not None


def test_a_created_conversation_is_committed_before_its_id_is_sent(settings):
    migrate(settings)
    app = create_app(settings)
    wrapped = _CheckAtSend(app, settings, _conversation_exists)
    with TestClient(wrapped) as client:
        for _ in range(3):
            assert client.post("/api/conversations", json={}).status_code == 201
    assert wrapped.seen == [True, True, True]


def test_feedback_is_committed_before_the_204(settings):
    migrate(settings)
    app = create_app(settings)
    seen: list[bool] = []
    message_id = None

    async def wrapped(scope, receive, send):
        async def checking_send(message):
            if message["type"] == "http.response.start" and message_id is not None:
                with session_scope(settings) as session:
                    seen.append(session.scalar(select(Feedback).where(Feedback.message_id == message_id)) is not None)
            await send(message)

        await app(scope, receive, checking_send if scope["type"] == "http" else send)

    with TestClient(wrapped) as client:
        created = client.post("/api/conversations", json={}).json()
        with session_scope(settings) as session:
            m = Message(conversation_id=created["id"], role="bot", text="An answer.")
            session.add(m)
            session.flush()
            message_id = m.id
        res = client.post(
            f"/api/messages/{message_id}/feedback",
            json={"rating": "up"},
            headers={"Authorization": f"Bearer {created['token']}"},
        )
        assert res.status_code == 204
    assert seen == [True]
