"""What a response acknowledges is committed before the client reads it (found under load: 404 right after 201)."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import select

from support_bot.core.db import migrate, session_scope
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


def test_a_burst_of_new_conversations_cannot_starve_the_workers_into_a_deadlock(settings):
    """Found under load (bench/load.py, 200 sessions): every conversation creation failed after the pool timeout.

    A handler that returned with its transaction still open held its database connection until FastAPI, on a worker
    thread, had validated the response; meanwhile other handlers held every worker thread waiting for a connection.
    Shrunk here to one worker thread and one connection, with two requests at once.
    """
    import anyio
    import httpx
    from sqlalchemy import create_engine, event

    from support_bot.core import db

    migrate(settings)
    url = settings.resolved_database_url
    db.dispose_engines()
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=3
    )
    event.listen(engine, "connect", db._sqlite_pragmas)
    db._engines[url] = engine
    app = create_app(settings)

    async def burst() -> list[int]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            statuses: list[int] = []

            async def create() -> None:
                statuses.append((await client.post("/api/conversations", json={})).status_code)

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(create)
            return statuses

    assert anyio.run(burst) == [201, 201, 201, 201]
    with session_scope(settings) as session:
        assert len(session.scalars(select(Conversation)).all()) == 4
