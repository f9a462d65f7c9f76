"""Live conversation events: rows kept for replay, and a bus that wakes live streams once those rows are committed.

The database is the source of truth: a stream reads events from it by seq, so a lost bus message only delays an
event, never loses it. The bus carries wake-ups (and ephemeral typing notices), never the events themselves.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from support_bot.core.config import Settings, get_settings
from support_bot.core.db import after_commit
from support_bot.core.errors import InvalidInput
from support_bot.models import ConversationEvent, utcnow

log = logging.getLogger(__name__)

AUDIENCES = frozenset({"all", "console"})
CUSTOMER_AUDIENCE = frozenset({"all"})
CONSOLE_AUDIENCE = frozenset({"all", "console"})
CONSOLE_CHANNEL = "console"
TYPING_WHO = frozenset({"customer", "agent"})
_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,31}")

# What a subscription yields besides "event" and "typing" messages from publishers.
RESYNC = {"type": "resync"}  # something may have been missed: read the database
DOWN = {"type": "down"}  # the bus lost its connection: poll the database until the next resync
CLOSED = {"type": "closed"}  # the subscription was closed (shutdown): end the stream


def conversation_channel(conversation_id: str) -> str:
    return f"conv:{conversation_id}"


class Subscription:
    """Bus messages for some channels, read from a thread (`get`) or from a coroutine (`aget`)."""

    def __init__(self, hub: _Hub, channels: frozenset[str], *, max_pending: int = 1000):
        self.channels = channels
        self._hub = hub
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._items: deque[dict[str, Any]] = deque()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.closed = False

    def deliver(self, message: dict[str, Any]) -> None:
        with self._lock:
            if self.closed:
                return
            if len(self._items) >= self._max_pending:
                # A reader this far behind re-reads the database anyway; one marker replaces the backlog.
                self._items.clear()
                self._items.append(RESYNC)
            self._items.append(message)
            self._wake_locked()

    def _wake_locked(self) -> None:
        self._ready.notify_all()
        for loop, ready in self._waiters:
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:  # that loop is closed; its reader is gone
                pass
        self._waiters.clear()

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message, CLOSED once closed, or None after `timeout` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._items:
                if self.closed:
                    return CLOSED
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._ready.wait(remaining)
            return self._items.popleft()

    async def aget(self, timeout: float) -> dict[str, Any] | None:
        """Like `get`, without blocking the event loop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                if self.closed:
                    return CLOSED
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                waiter = (loop, asyncio.Event())
                self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter[1].wait(), remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def drain(self) -> list[dict[str, Any]]:
        """Every message already waiting, without blocking."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            return items

    def close(self) -> None:
        self._hub._remove(self)
        with self._lock:
            self.closed = True
            self._items.clear()
            self._wake_locked()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


class _Hub:
    """This process's subscriptions by channel."""

    def __init__(self) -> None:
        self._subs_lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}

    def subscribe(self, channels: Iterable[str]) -> Subscription:
        sub = Subscription(self, frozenset(channels))
        with self._subs_lock:
            for channel in sub.channels:
                self._subs.setdefault(channel, set()).add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._subs_lock:
            for channel in sub.channels:
                subs = self._subs.get(channel)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._subs[channel]

    def _all(self) -> set[Subscription]:
        with self._subs_lock:
            return {sub for subs in self._subs.values() for sub in subs}

    def dispatch(self, channel: str, message: dict[str, Any]) -> None:
        with self._subs_lock:
            subs = list(self._subs.get(channel, ()))
        for sub in subs:
            sub.deliver(message)

    def broadcast(self, message: dict[str, Any]) -> None:
        for sub in self._all():
            sub.deliver(message)

    def subscriber_count(self) -> int:
        return len(self._all())

    def close(self) -> None:
        for sub in self._all():
            sub.close()


class InProcessBus(_Hub):
    """The embedded default: one process, so publishing is handing the message to local subscribers."""

    healthy = True

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        self.dispatch(channel, message)

    def wait_ready(self, timeout: float = 0.0) -> bool:
        return True


class RedisBus(_Hub):
    """Redis pub/sub across web processes: one listener thread per process, reconnecting with backoff, and one
    publisher thread, so that no request ever waits on Redis (a Redis that accepts connections and never answers
    included).

    A published message reaches this process's own streams at once, in the caller's thread; other processes get it
    through Redis, from the publisher thread. Every wait on Redis is bounded.
    """

    # Messages waiting for the publisher thread; past this many (Redis away for long) the oldest are dropped and the
    # other processes' streams are told to re-read the database once Redis is back.
    MAX_PENDING = 10_000
    # Seconds any one Redis call of the publisher may take; the listener's liveness check is LIVENESS_S.
    PUBLISH_TIMEOUT_S = 1.0
    LIVENESS_S = 5.0

    def __init__(self, url: str, *, prefix: str = "support_bot:", reconnect_max_s: float = 5.0):
        super().__init__()
        self.url = url
        self.prefix = prefix
        self.reconnect_max_s = reconnect_max_s
        # This bus's messages come back from Redis too; they were delivered locally already.
        self._origin = uuid.uuid4().hex
        # No client-side retries: the publisher thread backs off itself, and the listener must see every drop so
        # that it can tell streams to poll and, once back, to re-read what they may have missed.
        self._publisher = redis.Redis.from_url(
            url,
            socket_connect_timeout=self.PUBLISH_TIMEOUT_S,
            socket_timeout=self.PUBLISH_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        self._outbox: deque[tuple[str, str]] = deque()
        self._outbox_ready = threading.Condition()
        self._dropped = False
        self._healthy = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._publisher_thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    @property
    def healthy(self) -> bool:
        return self._healthy.is_set()

    def subscribe(self, channels: Iterable[str]) -> Subscription:
        # Registered before the listener starts: the listener's first connection tells it to read the database.
        subscription = super().subscribe(channels)
        self._ensure_listener()
        return subscription

    def wait_ready(self, timeout: float = 0.0) -> bool:
        """True once the listener is subscribed on Redis (waiting up to `timeout` seconds)."""
        self._ensure_listener()
        return self._healthy.wait(timeout)

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        """Deliver to this process's streams now and queue for the others; never waits on Redis."""
        self.dispatch(channel, message)
        data = json.dumps({"origin": self._origin, "message": message})
        with self._outbox_ready:
            if len(self._outbox) >= self.MAX_PENDING:
                self._outbox.popleft()
                self._dropped = True
            self._outbox.append((self.prefix + channel, data))
            self._outbox_ready.notify()
        self._ensure_publisher()

    def pending(self) -> int:
        """Messages not yet handed to Redis."""
        with self._outbox_ready:
            return len(self._outbox)

    def _ensure_listener(self) -> None:
        with self._thread_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._listen, name="events-redis-listener", daemon=True)
                self._thread.start()

    def _ensure_publisher(self) -> None:
        if self._publisher_thread is not None:
            return
        with self._thread_lock:
            if self._publisher_thread is None and not self._stop.is_set():
                self._publisher_thread = threading.Thread(
                    target=self._publish_loop, name="events-redis-publisher", daemon=True
                )
                self._publisher_thread.start()

    def _publish_loop(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            with self._outbox_ready:
                while not self._outbox and not self._stop.is_set():
                    self._outbox_ready.wait(1.0)
                if self._stop.is_set():
                    return
                channel, data = self._outbox[0]
                resync = self._dropped
            try:
                if resync:
                    # Some wake-ups never left this process: every other stream re-reads the database.
                    self._publisher.publish(self.prefix + _RESYNC_CHANNEL, json.dumps({"origin": self._origin}))
                    with self._outbox_ready:
                        self._dropped = False
                self._publisher.publish(channel, data)
            except (redis.RedisError, OSError) as exc:
                # This process's streams heard it already; the others poll the database while Redis is away.
                if delay == 0.1:
                    log.warning("live events: publish to Redis failed (%s); other processes poll meanwhile", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            delay = 0.1
            with self._outbox_ready:
                if self._outbox and self._outbox[0] == (channel, data):
                    self._outbox.popleft()

    def _set_healthy(self, healthy: bool) -> None:
        if healthy and not self._healthy.is_set():
            self._healthy.set()
            self.broadcast(RESYNC)
        elif not healthy and self._healthy.is_set():
            self._healthy.clear()
            self.broadcast(DOWN)

    def _listen(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            client = pubsub = None
            try:
                client = redis.Redis.from_url(
                    self.url,
                    socket_connect_timeout=2.0,
                    # Bounds the connection's own handshake; reading messages waits on get_message's timeout.
                    socket_timeout=self.LIVENESS_S,
                    socket_keepalive=True,
                    retry=Retry(NoBackoff(), 0),
                )
                pubsub = client.pubsub()
                pubsub.psubscribe(self.prefix + "*")
                self._receive(pubsub)
            except (redis.RedisError, OSError) as exc:
                if self.healthy:
                    log.warning("live events: lost Redis (%s); streams poll the database until it is back", exc)
            except Exception:  # a bug here must not end live events for the life of the process
                log.exception("live events: Redis listener failed")
            else:
                delay = 0.1
            finally:
                if self.healthy:
                    delay = 0.1
                self._set_healthy(False)
                for closable in (pubsub, client):
                    if closable is not None:
                        try:
                            closable.close()
                        except Exception:
                            pass
            self._stop.wait(delay)
            delay = min(delay * 2, self.reconnect_max_s)

    def _receive(self, pubsub: Any) -> None:
        """Read messages until stopped; a Redis that stops answering (even with the connection open) raises."""
        heard = time.monotonic()
        next_ping = heard + self.LIVENESS_S
        while not self._stop.is_set():
            msg = pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if msg is not None:
                heard = now
                if msg["type"] == "psubscribe":
                    self._set_healthy(True)
                elif msg["type"] == "pmessage":
                    self._on_message(msg["channel"], msg["data"])
            if now >= next_ping:
                pubsub.ping()
                next_ping = now + self.LIVENESS_S
            if now - heard > 3 * self.LIVENESS_S:
                raise redis.ConnectionError(f"Redis sent nothing for {now - heard:.0f} seconds, not even a pong")

    def _on_message(self, channel: bytes | str, data: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("live events: ignoring a malformed message on %s", name)
            return
        if not isinstance(message, dict) or not name.startswith(self.prefix):
            return
        if "origin" in message:
            if message["origin"] == self._origin:
                return  # delivered locally when it was published
            if name == self.prefix + _RESYNC_CHANNEL:
                self.broadcast(RESYNC)
                return
            message = message.get("message")
            if not isinstance(message, dict):
                return
        self.dispatch(name[len(self.prefix):], message)

    def close(self) -> None:
        self._stop.set()
        with self._outbox_ready:
            self._outbox_ready.notify_all()
        for thread in (self._thread, self._publisher_thread):
            if thread is not None:
                thread.join(timeout=5)
        super().close()
        self._publisher.close()


# Where a publisher that had to drop wake-ups tells every other process's streams to re-read the database.
_RESYNC_CHANNEL = "_resync"


Bus = InProcessBus | RedisBus

_buses: dict[tuple[str, str], Bus] = {}
_buses_lock = threading.Lock()


def get_bus(settings: Settings) -> Bus:
    """This process's bus for these settings: Redis pub/sub when redis_url is set, in-process otherwise."""
    key = (settings.redis_url or "", settings.events.channel_prefix)
    with _buses_lock:
        bus = _buses.get(key)
        if bus is None:
            if settings.redis_url:
                bus = RedisBus(
                    settings.redis_url,
                    prefix=settings.events.channel_prefix,
                    reconnect_max_s=settings.events.reconnect_max_s,
                )
            else:
                bus = InProcessBus()
            _buses[key] = bus
        return bus


def close_buses() -> None:
    """Close every bus of this process (tests, shutdown); streams reading them end."""
    with _buses_lock:
        buses = list(_buses.values())
        _buses.clear()
    for bus in buses:
        bus.close()


# --- storing events and waking streams after commit -------------------------------------------------------------

def emit(
    session: Session, *, conversation_id: str, kind: str, data: dict[str, Any], audience: str = "all"
) -> ConversationEvent:
    """Add one event in the caller's transaction; live streams are woken once that transaction commits."""
    if audience not in AUDIENCES:
        raise InvalidInput(f"event audience must be one of {sorted(AUDIENCES)}")
    if not _KIND.fullmatch(kind or ""):
        # The kind becomes the SSE `event:` line, so it must not be able to break the stream's framing.
        raise InvalidInput("event kind must be 1 to 32 lower-case letters, digits, '_', '.' or '-'")
    try:
        # A round trip through JSON now, so a bad value fails here and not in some later flush.
        data = json.loads(json.dumps(data))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"event data must be JSON: {exc}") from exc
    row = ConversationEvent(
        conversation_id=conversation_id, kind=kind, audience=audience, data=data, created_at=utcnow()
    )
    session.add(row)
    session.flush()
    wake = {"type": "event", "seq": row.seq, "conversation_id": conversation_id, "kind": kind, "audience": audience}
    settings = session.info.get("settings") or get_settings()
    after_commit(session, functools.partial(_publish_wakeup, settings, wake))
    return row


def _publish_wakeup(settings: Settings, wake: dict[str, Any]) -> None:
    try:
        publish_wakeups(get_bus(settings), [wake])
    except Exception:  # the data is committed; a stream still finds it at its next read
        log.exception("live events: could not publish wake-ups")


def publish_wakeups(bus: Bus, wakeups: list[dict[str, Any]]) -> None:
    for wake in wakeups:
        bus.publish(conversation_channel(wake["conversation_id"]), wake)
        bus.publish(CONSOLE_CHANNEL, wake)


def notify_typing(
    settings: Settings, *, conversation_id: str, who: str, name: str | None = None, typing: bool = True
) -> None:
    """Tell live streams that someone is (or stopped) typing; not stored, so never replayed."""
    if who not in TYPING_WHO:
        raise InvalidInput(f"who must be one of {sorted(TYPING_WHO)}")
    message = {"type": "typing", "conversation_id": conversation_id, "who": who, "name": name, "typing": bool(typing)}
    bus = get_bus(settings)
    bus.publish(conversation_channel(conversation_id), message)
    bus.publish(CONSOLE_CHANNEL, message)


# --- reading events ----------------------------------------------------------------------------------------------


def _filtered(query, *, conversation_id: str | None, audience: Iterable[str]):
    query = query.where(ConversationEvent.audience.in_(sorted(audience)))
    if conversation_id is not None:
        query = query.where(ConversationEvent.conversation_id == conversation_id)
    return query


def events_after(
    session: Session,
    *,
    conversation_id: str | None,
    after_seq: int,
    audience: set[str] | frozenset[str],
    limit: int = 500,
) -> list[ConversationEvent]:
    """Events with seq > after_seq for these audiences (one conversation, or all when None), oldest first."""
    query = _filtered(
        select(ConversationEvent).where(ConversationEvent.seq > after_seq),
        conversation_id=conversation_id,
        audience=audience,
    )
    return list(session.scalars(query.order_by(ConversationEvent.seq).limit(max(1, limit))))


def latest_seq(session: Session, *, conversation_id: str | None = None) -> int:
    """The newest event's seq (0 when there is none)."""
    query = select(func.max(ConversationEvent.seq))
    if conversation_id is not None:
        query = query.where(ConversationEvent.conversation_id == conversation_id)
    return session.scalar(query) or 0


def payload(event: ConversationEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "conversation_id": event.conversation_id,
        "kind": event.kind,
        "audience": event.audience,
        "data": event.data,
        "created_at": event.created_at.isoformat() if event.created_at else None,
    }


class EventFeed:
    """A live stream's reader: each event exactly once, oldest first, including late commits of earlier seqs.

    Seqs are handed out at insert and become visible at commit, and on PostgreSQL two transactions can commit in the
    other order; a reader that only asked for seq > last sent would then skip the earlier one for good. So the feed
    also re-reads events created in the last `late_window_s` seconds and skips those it already sent.
    """

    def __init__(
        self,
        *,
        conversation_id: str | None,
        audience: set[str] | frozenset[str],
        after_seq: int,
        late_window_s: float = 30.0,
    ):
        self.conversation_id = conversation_id
        self.audience = frozenset(audience)
        self.start = after_seq
        self.position = after_seq  # the highest seq sent so far
        self.late_window = timedelta(seconds=late_window_s)
        self._sent: dict[int, datetime] = {}  # recently sent seqs, kept while they are inside the window

    def read(self, session: Session, *, limit: int = 500, now: datetime | None = None) -> list[ConversationEvent]:
        """The events not sent yet (at most `limit`), now counted as sent."""
        since = (now or utcnow()) - self.late_window
        query = _filtered(
            select(ConversationEvent).where(
                ConversationEvent.seq > self.start,
                or_(ConversationEvent.seq > self.position, ConversationEvent.created_at >= since),
            ),
            conversation_id=self.conversation_id,
            audience=self.audience,
        )
        rows = session.scalars(query.order_by(ConversationEvent.seq).limit(max(1, limit) + len(self._sent)))
        fresh = [row for row in rows if row.seq not in self._sent][: max(1, limit)]
        for row in fresh:
            self._sent[row.seq] = _aware(row.created_at)
            self.position = max(self.position, row.seq)
        # Older ones can no longer match the query, so they need not be remembered.
        self._sent = {seq: at for seq, at in self._sent.items() if at >= since}
        return fresh


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)
