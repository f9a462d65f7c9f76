"""A Redis that accepts connections and never answers: nothing a customer or an agent does waits on it."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from support_bot import handoff
from support_bot.chat.store import start_conversation
from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.core.ratelimit import Limit, RedisRateLimiter
from support_bot.live.events import RedisBus
from support_bot.models import Conversation, Message
from tests.conftest import add_user
from tests.live.blackhole import Blackhole
from tests.web.helpers import login, parse_sse
from web.app import create_app

pytestmark = [pytest.mark.timeout(120)]
# Far less than any wait on the silent Redis would take (every Redis call there runs into a socket timeout of
# seconds, and a request makes several), far more than the request itself needs.
PROMPT_S = 6.0


@pytest.fixture
def blackhole():
    server = Blackhole()
    yield server
    # Blocked readers get an error at once, so the buses close without waiting out their timeouts.
    server.close()


def _finishes(call, timeout: float) -> list:
    """The call's result in a one-item list when it returned within `timeout` seconds, else an empty list."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(timeout)
    return out


def test_a_publish_never_waits_for_redis_and_still_reaches_this_process(blackhole, monkeypatch):
    # Even with no timeout short enough to save it, the caller does not wait: Redis is the publisher thread's job.
    monkeypatch.setattr(RedisBus, "PUBLISH_TIMEOUT_S", 60.0, raising=False)
    bus = RedisBus(blackhole.url, prefix="sbtest:")
    try:
        sub = bus.subscribe(["conv:a"])
        done = _finishes(lambda: [bus.publish("conv:a", {"type": "event", "seq": n}) for n in range(5)], PROMPT_S)
        assert done, "publish waited on a Redis that never answers"
        got = [m for m in sub.drain() if m.get("type") == "event"]
        assert [m["seq"] for m in got] == [0, 1, 2, 3, 4]
        assert not bus.healthy  # streams read the database on a timer meanwhile
        assert bus.pending() >= 1  # still queued for the other processes
    finally:
        blackhole.close()
        bus.close()


def test_the_rate_limiter_stops_asking_a_silent_redis_and_counts_in_process(blackhole):
    limiter = RedisRateLimiter(blackhole.url, prefix="sbtest:")
    limit = [Limit("test", "k", 3, 60)]
    try:
        assert limiter.hit(limit).allowed  # this one waited (bounded) for Redis, then counted here
        sent = blackhole.received
        decisions = _finishes(lambda: [limiter.hit(limit).allowed for _ in range(50)], PROMPT_S)
        assert decisions, "each request waited on the silent Redis"
        assert decisions[0][:3] == [True, True, False]  # the limit still holds, counted in this process
        assert blackhole.received == sent  # backing off: Redis was not asked again
    finally:
        limiter.close()


@pytest.fixture
def silent_redis_app(kb: Settings, blackhole, fast_hashing):
    settings = kb.model_copy(update={"redis_url": blackhole.url})
    add_user(settings, "agent", "agent")
    with TestClient(create_app(settings)) as client:
        yield settings, client


def test_a_claim_and_a_customer_message_do_not_wait_for_a_silent_redis(silent_redis_app):
    settings, client = silent_redis_app
    with session_scope(settings) as session:
        queued, _ = start_conversation(session=session, settings=settings)
        session.add(Message(conversation_id=queued.id, role="customer", text="I need a person"))
        handoff.start_handoff(session, settings, queued, reason="button")
        queued_id = queued.id
    me = login(client, "agent")

    claimed = _finishes(
        lambda: client.post(
            f"/api/console/conversations/{queued_id}/claim", headers={"X-CSRF-Token": me["csrf_token"]}
        ),
        PROMPT_S,
    )
    assert claimed, "the claim waited on Redis"
    assert claimed[0].status_code == 200, claimed[0].text
    with session_scope(settings) as session:
        assert session.get(Conversation, queued_id).status == "assigned"

    client.cookies.clear()
    started = time.monotonic()
    conv = client.post("/api/conversations", json={}).json()
    answered = _finishes(
        lambda: client.post(
            f"/api/conversations/{conv['id']}/messages",
            json={"text": "How long does shipping take?"},
            headers={"Authorization": f"Bearer {conv['token']}"},
        ),
        PROMPT_S - (time.monotonic() - started),
    )
    assert answered, "the customer's message waited on Redis"
    events = parse_sse(answered[0].text)
    assert events[-1][0] == "done"
