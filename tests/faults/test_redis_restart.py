"""Redis killed (SIGKILL) and restarted under live chats on two `support-bot serve` processes.

Customers chat on process B while their live streams and an agent's console stream are open on process A, so every
event reaches A through Redis pub/sub, or, while Redis is away, through A reading the database on a timer. Chats must
go on through the outage, the rate limits must keep counting (per process, as designed), and every stream must show
each event exactly once, in order, both the ones that stay open and one that reconnects with Last-Event-ID.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from support_bot.ops import auth
from support_bot.core.db import migrate, session_scope
from support_bot.models import ConversationEvent, Message
from tests.conftest import PASSWORD, add_user
from tests.live.redis_server import RedisServer, private_redis
from tests.live.test_two_processes import Server, frames
from tests.web.helpers import parse_sse

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

CHATS = 3
# New conversations one IP may open per hour: small, so the outage test can reach it.
CONVERSATIONS_PER_IP = 8
WAIT_S = 30


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisServer]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    yield from private_redis(workdir)


@pytest.fixture
def servers(tmp_path, settings, own_redis) -> Iterator[tuple[Server, Server]]:
    """A and B on one SQLite file and the private Redis."""
    migrate(settings)
    auth._hasher = PasswordHasher()
    add_user(settings, "dana")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_BOT_")}
    env.update({
        "SUPPORT_BOT_DATA_DIR": str(settings.data_dir.resolve()),
        "SUPPORT_BOT_REDIS_URL": own_redis.url,
        "SUPPORT_BOT_EVENTS__CHANNEL_PREFIX": f"sbtest-{uuid.uuid4().hex[:10]}:",
        # No heartbeat re-reads and no stream ends during the test: an event reaches A's open streams through
        # Redis, or through the database polling that only runs while Redis is away.
        "SUPPORT_BOT_EVENTS__HEARTBEAT_S": "3600",
        "SUPPORT_BOT_EVENTS__MAX_STREAM_S": "86400",
        "SUPPORT_BOT_EVENTS__POLL_INTERVAL_S": "0.5",
        "SUPPORT_BOT_EVENTS__RECONNECT_MAX_S": "0.5",
        "SUPPORT_BOT_LLM__BACKEND": "fake",
        "SUPPORT_BOT_SAFETY__ENABLED": "false",
        # The knowledge base is empty, so the bot abstains each time; keep it answering instead of handing off.
        "SUPPORT_BOT_HANDOFF__ABSTAIN_ENABLED": "false",
        "SUPPORT_BOT_HANDOFF__MAX_TURNS_ENABLED": "false",
        "SUPPORT_BOT_WIDGET__CONVERSATIONS_PER_IP": str(CONVERSATIONS_PER_IP),
        "SUPPORT_BOT_WIDGET__MESSAGES_PER_IP": "100000",
        "SUPPORT_BOT_WIDGET__MESSAGES_PER_CONVERSATION": "100000",
        "SUPPORT_BOT_WIDGET__REQUESTS_PER_IP": "100000",
    })
    started: list[Server] = []
    try:
        # Started together (the schema is migrated and the first user exists, so neither has anything to race for).
        for name in ("a", "b"):
            started.append(Server(name, env, tmp_path))
        for server in started:
            server.wait_healthy()
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


class Stream:
    """One SSE stream read on a thread of its own; `frames` grows as they arrive."""

    def __init__(self, base: str, path: str, *, headers: dict | None = None, cookies=None) -> None:
        self.frames: list[dict] = []
        self.ended = threading.Event()
        self._cond = threading.Condition()
        self._client = httpx.Client(base_url=base, timeout=httpx.Timeout(120, connect=10), cookies=cookies)
        self._cm = self._client.stream("GET", path, headers=headers or {})
        response = self._cm.__enter__()
        assert response.status_code == 200, response.read()
        self._response = response
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for frame in frames(self._response.iter_lines()):
                with self._cond:
                    self.frames.append(frame)
                    self._cond.notify_all()
        except (httpx.HTTPError, RuntimeError, ValueError):
            pass  # closed under us at the end of the test
        finally:
            self.ended.set()
            with self._cond:
                self._cond.notify_all()

    def wait(self, predicate: Callable[[list[dict]], bool], timeout: float = WAIT_S) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.frames):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.ended.is_set():
                    return predicate(self.frames)
                self._cond.wait(remaining)
            return True

    def ids(self) -> list[int]:
        return [int(f["id"]) for f in list(self.frames) if "id" in f]

    def close(self) -> None:
        # Closing the client does not wake a thread blocked reading the socket; shutting the socket down does.
        network = self._response.extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=10)
        self._client.close()


class Chat:
    """A customer on process B sending one message after another, each with its own client_message_id."""

    def __init__(self, base: str, name: str) -> None:
        self.name = name
        self.client = httpx.Client(base_url=base, timeout=60)
        res = self.client.post("/api/conversations", json={})
        assert res.status_code == 201, res.text
        self.id, self.token = res.json()["id"], res.json()["token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}
        self.results: list[tuple[str, int, list]] = []  # (client_message_id, status, events)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            cid = f"{self.name}-{n}"
            try:
                res = self.client.post(
                    f"/api/conversations/{self.id}/messages", headers=self.headers,
                    json={"text": f"Question {n}: where is my parcel number {n}?", "client_message_id": cid},
                )
                self.results.append((cid, res.status_code, parse_sse(res.text) if res.status_code == 200 else
                                     [("http", {"detail": res.text})]))
            except httpx.HTTPError as exc:
                self.results.append((cid, 0, [("transport", {"detail": str(exc)})]))
            n += 1
            time.sleep(0.1)

    def answered(self) -> int:
        return len(self.results)


class Reconnecting:
    """An EventSource-like client: streams that the server ends every second, each resumed with Last-Event-ID."""

    def __init__(self, base: str, chat: Chat) -> None:
        self.base, self.chat = base, chat
        self.frames: list[dict] = []
        self.connections = 0
        self.refused: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last: str | None = None
        with httpx.Client(base_url=self.base, timeout=60) as client:
            while not self.stop.is_set():
                headers = dict(self.chat.headers)
                if last is not None:
                    headers["Last-Event-ID"] = last
                try:
                    with client.stream(
                        "GET", f"/api/conversations/{self.chat.id}/events?timeout=1", headers=headers
                    ) as res:
                        if res.status_code != 200:
                            self.refused.append(res.status_code)
                            time.sleep(0.2)
                            continue
                        self.connections += 1
                        for frame in frames(res.iter_lines()):
                            self.frames.append(frame)
                            if "id" in frame:
                                last = frame["id"]
                except httpx.HTTPError:
                    time.sleep(0.2)

    def ids(self) -> list[int]:
        return [int(f["id"]) for f in list(self.frames) if "id" in f]


def _event_seqs(settings, conversation_id: str | None, audiences: tuple[str, ...], after: int = 0) -> list[int]:
    with session_scope(settings) as session:
        query = select(ConversationEvent.seq).where(
            ConversationEvent.seq > after, ConversationEvent.audience.in_(audiences)
        )
        if conversation_id is not None:
            query = query.where(ConversationEvent.conversation_id == conversation_id)
        return list(session.scalars(query.order_by(ConversationEvent.seq)))


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_chats_and_live_events_survive_a_redis_restart(servers, own_redis, settings):
    a, b = servers
    chats = [Chat(b.base, f"chat{i}") for i in range(CHATS)]
    agent = httpx.Client(base_url=a.base, timeout=30)
    assert agent.post("/api/console/login", json={"username": "dana", "password": PASSWORD}).status_code == 200
    streams: list[Stream] = []
    reconnecting = Reconnecting(a.base, chats[0])
    try:
        console = Stream(a.base, "/api/console/events", cookies=agent.cookies)
        streams.append(console)
        customer = [Stream(a.base, f"/api/conversations/{c.id}/events", headers=c.headers) for c in chats[1:]]
        streams += customer
        # Subscribed once the first frame is out.
        assert all(s.wait(lambda f: len(f) >= 1) and s.frames[0] == {"retry": "2000"} for s in streams)
        # The console stream starts from the newest event when it opened.
        console_start = max(_event_seqs(settings, None, ("all", "console")), default=0)
        reconnecting.thread.start()
        for chat in chats:
            chat.thread.start()

        # Redis up: what customers send on B shows live on A.
        assert wait_until(lambda: all(c.answered() >= 3 for c in chats))
        assert console.wait(lambda f: sum(1 for x in f if x.get("event") == "message") >= 6)

        own_redis.stop()  # SIGKILL
        killed_at = {c.name: c.answered() for c in chats}
        # Chats go on: messages are stored, answered, and reach A's streams by its database polling.
        assert wait_until(lambda: all(c.answered() >= killed_at[c.name] + 4 for c in chats)), a.log.read_text()
        # The rate limits still count, in each process alone: B lets this IP open its quota of conversations, then
        # refuses with a clear 429.
        with httpx.Client(base_url=b.base, timeout=30) as opener:
            codes = [opener.post("/api/conversations", json={}) for _ in range(CONVERSATIONS_PER_IP + 1)]
        assert [r.status_code for r in codes] == [201] * CONVERSATIONS_PER_IP + [429]
        refused = codes[-1]
        assert int(refused.headers["Retry-After"]) >= 1 and "new conversations" in refused.json()["detail"]
        # Events made during the outage are on A's open streams without Redis.
        during = _event_seqs(settings, chats[1].id, ("all",))[-1]
        assert customer[0].wait(lambda f: during in [int(x["id"]) for x in f if "id" in x]), a.log.read_text()

        own_redis.start()  # same port, empty
        # Live again through Redis: typing is never stored, so B's notice can reach A's console only through it.
        # (A's listener reconnects with backoff, so the notice is repeated until one arrives.)
        def typing_seen() -> bool:
            chats[1].client.post(f"/api/conversations/{chats[1].id}/typing", headers=chats[1].headers,
                                 json={"typing": True})
            return console.wait(lambda f: any(x.get("event") == "typing" for x in f), timeout=0.5)

        assert wait_until(typing_seen), a.log.read_text()
        restarted_at = {c.name: c.answered() for c in chats}
        assert wait_until(lambda: all(c.answered() >= restarted_at[c.name] + 4 for c in chats))
    finally:
        for chat in chats:
            chat.stop.set()
        for chat in chats:
            chat.thread.join(timeout=60)
        # The reconnecting client keeps resuming until it is checked below: stopped here, a last event that came
        # after its final one-second stream would never reach it (seen on a loaded machine).

    try:
        # Every message was accepted and answered, through the outage too: nothing was refused or lost.
        for chat in chats:
            bad = [(cid, status, events[-1:]) for cid, status, events in chat.results
                   if status != 200 or not events or events[-1][0] != "done" or not events[-1][1].get("message_id")]
            assert bad == [], bad
            with session_scope(settings) as session:
                stored = list(session.scalars(
                    select(Message).where(Message.conversation_id == chat.id).order_by(Message.seq)
                ))
            questions = [m for m in stored if m.role == "customer"]
            assert [m.client_message_id for m in questions] == [cid for cid, _, _ in chat.results]
            replies = {m.reply_to_id: m.id for m in stored if m.role == "bot"}
            assert len(replies) == len(questions) == len(stored) / 2
            assert [replies[q.id] for q in questions] == [events[-1][1]["message_id"] for _, _, events in
                                                           chat.results]

        # Once A's bus is back, events reach its streams through Redis alone (polling is off again): each stream
        # catches up with the database and has shown each event once, in order.
        for chat, stream in zip(chats[1:], customer, strict=True):
            expected = _event_seqs(settings, chat.id, ("all",))
            assert stream.wait(lambda f, e=expected: [int(x["id"]) for x in f if "id" in x] == e), (
                stream.ids(), expected,
            )
        expected = _event_seqs(settings, None, ("all", "console"), after=console_start)
        assert console.wait(lambda f: [int(x["id"]) for x in f if "id" in x] == expected), (console.ids(), expected)
        # The reconnecting client resumed with Last-Event-ID many times, across the outage, without a gap or repeat.
        expected = _event_seqs(settings, chats[0].id, ("all",))
        assert wait_until(lambda: reconnecting.ids() == expected), (reconnecting.ids(), expected)
        assert reconnecting.connections >= 3 and reconnecting.refused == []
        assert not any(s.ended.is_set() for s in streams), "a long-lived stream ended during the outage"
    finally:
        reconnecting.stop.set()
        reconnecting.thread.join(timeout=10)
        for stream in streams:
            stream.close()
        for chat in chats:
            chat.client.close()
        agent.close()
