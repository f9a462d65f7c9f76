"""The Redis bus: wake-ups across connections, after commit only, and surviving a Redis restart."""

from __future__ import annotations

import time
import uuid

import pytest

from support_bot.core.db import session_scope
from support_bot.live.events import DOWN, RESYNC, RedisBus, emit, get_bus
from tests.live.conftest import new_conversation

pytestmark = [pytest.mark.timeout(120)]
CONTROL = ({"type": "resync"}, {"type": "down"})


def next_message(sub, timeout: float = 15) -> dict | None:
    """The next message a publisher sent, skipping the bus's own resync/down notices."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        message = sub.get(timeout=remaining)
        if message not in CONTROL:
            return message
    return None


def wait_for(condition, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def prefix() -> str:
    return f"sbtest-{uuid.uuid4().hex[:10]}:"


@pytest.mark.redis
def test_a_message_published_on_one_connection_reaches_subscribers_on_another(redis_url):
    channels = prefix()
    listener, publisher = RedisBus(redis_url, prefix=channels), RedisBus(redis_url, prefix=channels)
    stranger = RedisBus(redis_url, prefix=prefix())
    try:
        sub = listener.subscribe(["conv:abc"])
        other_channel = listener.subscribe(["conv:xyz"])
        stranger_sub = stranger.subscribe(["conv:abc"])
        assert listener.wait_ready(15) and stranger.wait_ready(15)
        assert sub.get(timeout=5) == RESYNC  # becoming ready tells existing readers to look at the database
        publisher.publish("conv:abc", {"type": "event", "seq": 41})
        assert next_message(sub) == {"type": "event", "seq": 41}
        # Nothing published reaches another channel. (Its resync notice depends on timing: the listener, started by the
        # first subscribe, may already be ready when the second one registers, and only existing readers hear it.)
        assert [m for m in other_channel.drain() if m not in CONTROL] == []
        # Another installation (prefix) on the same Redis hears nothing of it.
        publisher.publish("conv:abc", {"type": "event", "seq": 42})
        assert next_message(sub) == {"type": "event", "seq": 42}
        assert stranger_sub.drain() == [RESYNC]
    finally:
        for bus in (listener, publisher, stranger):
            bus.close()


@pytest.mark.redis
def test_emit_wakes_redis_subscribers_after_commit_and_never_on_rollback(redis_settings):
    conv = new_conversation(redis_settings)
    bus = get_bus(redis_settings)
    assert isinstance(bus, RedisBus)
    sub = bus.subscribe(["console"])
    assert bus.wait_ready(15)
    with pytest.raises(RuntimeError):
        with session_scope(redis_settings) as session:
            emit(session, conversation_id=conv, kind="status", data={"status": "queued"})
            raise RuntimeError("rolled back")
    with session_scope(redis_settings) as session:
        kept = emit(session, conversation_id=conv, kind="status", data={"status": "bot"})
    # Had the rolled-back event been published, its wake-up would arrive first (Redis keeps a publisher's order).
    message = next_message(sub)
    assert message == {"type": "event", "seq": kept.seq, "conversation_id": conv, "kind": "status", "audience": "all"}


def test_the_bus_survives_a_redis_restart(own_redis):
    channels = prefix()
    listener = RedisBus(own_redis.url, prefix=channels, reconnect_max_s=0.2)
    publisher = RedisBus(own_redis.url, prefix=channels)
    try:
        sub = listener.subscribe(["console"])
        assert listener.wait_ready(15)
        publisher.publish("console", {"type": "event", "seq": 1})
        assert next_message(sub) == {"type": "event", "seq": 1}

        own_redis.stop()
        assert wait_for(lambda: not listener.healthy)
        assert DOWN in sub.drain() or sub.get(timeout=5) == DOWN
        # Publishing while Redis is away does not raise: the commit that triggered it has already happened.
        publisher.publish("console", {"type": "event", "seq": 2})

        own_redis.start()
        assert listener.wait_ready(30)
        assert wait_for(lambda: RESYNC in sub.drain())  # readers re-read the database for what they missed
        publisher.publish("console", {"type": "event", "seq": 3})
        # The wake-up published while Redis was away waited in the publisher's outbox and goes out first, in order
        # (it is lost only if it went out before the listener subscribed again; the resync covers that case).
        got = next_message(sub)
        if got == {"type": "event", "seq": 2}:
            got = next_message(sub)
        assert got == {"type": "event", "seq": 3}
    finally:
        listener.close()
        publisher.close()


def test_a_publish_that_fails_still_reaches_this_processes_subscribers(own_redis):
    bus = RedisBus(own_redis.url, prefix=prefix(), reconnect_max_s=0.2)
    try:
        sub = bus.subscribe(["conv:a"])
        assert bus.wait_ready(15)
        own_redis.stop()
        bus.publish("conv:a", {"type": "event", "seq": 5})
        assert next_message(sub) == {"type": "event", "seq": 5}
    finally:
        bus.close()
