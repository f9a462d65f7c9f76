"""PostgreSQL crashes and restarts under a running `support-bot serve`: no acknowledged message is lost.

Several customers send messages, each with its own client_message_id, while the private cluster is stopped with
`pg_ctl stop -m immediate` (every server process gone at once, no checkpoint) and started again. A message is either
acknowledged (its answer stream ends with `done`) or the client gets a clear error and sends the same
client_message_id again; in the end each message is stored exactly once with one answer, the web process was never
restarted, and a customer's live stream that stayed open through the crash showed every event exactly once.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from support_bot.core.config import Settings
from support_bot.core.db import dispose_engines, migrate, session_scope
from support_bot.models import ConversationEvent, Message
from tests.live.test_two_processes import Server
from tests.faults.pg_server import PostgresServer, private_postgres
from tests.faults.test_redis_restart import Stream, wait_until
from tests.web.helpers import parse_sse

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

CLIENTS = 4
# How long the cluster stays down: long enough that requests arrive while nothing answers on its port.
DOWN_S = 1.5
WAIT_S = 60
_wait = functools.partial(wait_until, timeout=WAIT_S)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    yield from private_postgres()


@pytest.fixture
def pg_settings(settings, own_postgres) -> Settings:
    s = settings.model_copy(update={"database_url": own_postgres.url})
    migrate(s)
    yield s
    dispose_engines()


@pytest.fixture
def server(tmp_path, pg_settings) -> Iterator[Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_BOT_")}
    env.update({
        "SUPPORT_BOT_DATA_DIR": str(pg_settings.data_dir.resolve()),
        "SUPPORT_BOT_DATABASE_URL": pg_settings.database_url,
        "SUPPORT_BOT_EVENTS__HEARTBEAT_S": "3600",
        "SUPPORT_BOT_EVENTS__MAX_STREAM_S": "86400",
        "SUPPORT_BOT_EVENTS__POLL_INTERVAL_S": "0.3",
        "SUPPORT_BOT_LLM__BACKEND": "fake",
        "SUPPORT_BOT_SAFETY__ENABLED": "false",
        # The knowledge base is empty, so the bot abstains each time; keep it answering instead of handing off.
        "SUPPORT_BOT_HANDOFF__ABSTAIN_ENABLED": "false",
        "SUPPORT_BOT_HANDOFF__MAX_TURNS_ENABLED": "false",
        "SUPPORT_BOT_WIDGET__RATE_LIMIT_ENABLED": "false",
    })
    srv = Server("web", env, tmp_path)
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


class Customer:
    """Sends messages one after another; a message that was not acknowledged is sent again with the same id."""

    def __init__(self, base: str, name: str) -> None:
        self.name = name
        self.client = httpx.Client(base_url=base, timeout=60)
        self.id = self.token = None
        while self.id is None:  # a 503 here is retried like any other
            res = self.client.post("/api/conversations", json={})
            if res.status_code == 201:
                self.id, self.token = res.json()["id"], res.json()["token"]
            else:
                assert res.status_code == 503, res.text
                time.sleep(0.2)
        self.headers = {"Authorization": f"Bearer {self.token}"}
        self.acknowledged: dict[str, str] = {}  # client_message_id -> the answer's message id
        self.texts: dict[str, str] = {}
        self.failures: list[tuple[str, str]] = []  # (client_message_id, what the client was told)
        self.odd: list[tuple[str, str]] = []  # anything but an acknowledgement or a clear, retryable error
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _send(self, cid: str, text: str) -> str | None:
        """The answer's message id when acknowledged; None after a clear error (recorded)."""
        try:
            res = self.client.post(
                f"/api/conversations/{self.id}/messages", headers=self.headers,
                json={"text": text, "client_message_id": cid},
            )
        except httpx.HTTPError as exc:
            self.odd.append((cid, f"transport error: {exc!r}"))
            return None
        if res.status_code != 200:
            body = res.json() if res.headers.get("content-type", "").startswith("application/json") else {}
            if res.status_code == 503 and body.get("detail") and res.headers.get("retry-after"):
                self.failures.append((cid, f"503 {body['detail']}"))
            else:
                self.odd.append((cid, f"{res.status_code} {res.text[:300]}"))
            return None
        events = parse_sse(res.text)
        if events and events[-1][0] == "done" and events[-1][1].get("message_id"):
            return events[-1][1]["message_id"]
        if events and events[-1][0] == "error" and events[-1][1].get("detail"):
            self.failures.append((cid, f"error event {events[-1][1]['detail']}"))
        else:
            self.odd.append((cid, f"stream without done or error: {res.text[-300:]}"))
        return None

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            cid = f"{self.name}-{n}"
            text = f"Question {n} from {self.name}: where is my parcel?"
            self.texts[cid] = text
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                answer = self._send(cid, text)
                if answer is not None:
                    self.acknowledged[cid] = answer
                    break
                time.sleep(0.2)  # as a client backs off before sending the same message again
            else:
                return  # never acknowledged: the assertions name it
            n += 1

    def sent(self) -> int:
        return len(self.acknowledged)


def test_no_acknowledged_message_is_lost_when_postgres_crashes_and_restarts(server, own_postgres, pg_settings):
    customers = [Customer(server.base, f"c{i}") for i in range(CLIENTS)]
    watched = customers[0]
    stream = Stream(server.base, f"/api/conversations/{watched.id}/events", headers=watched.headers)
    try:
        assert stream.wait(lambda f: len(f) >= 1) and stream.frames[0] == {"retry": "2000"}
        for customer in customers:
            customer.thread.start()
        assert _wait(lambda: all(c.sent() >= 3 for c in customers)), server.log.read_text()[-3000:]

        own_postgres.crash()
        before = {c.name: c.sent() for c in customers}
        time.sleep(DOWN_S)
        own_postgres.start()
        # The same web process, never restarted, takes messages again once its pool has reconnected.
        assert _wait(lambda: all(c.sent() >= before[c.name] + 3 for c in customers)), server.log.read_text()[-3000:]
        assert server.proc.poll() is None
    finally:
        for customer in customers:
            customer.stop.set()
        for customer in customers:
            customer.thread.join(timeout=WAIT_S + 30)

    try:
        # The crash was felt (requests failed with clear errors and were sent again), and nothing else happened:
        # no 500, no cut-off stream, no stream that ended without `done` or `error`.
        failures = [f for c in customers for f in c.failures]
        odd = [f for c in customers for f in c.odd]
        assert odd == [], odd
        assert failures, "no request met the database outage; the test did not exercise the crash"
        assert all(not c.thread.is_alive() for c in customers)

        dispose_engines()  # connections of this test process from before the crash
        with session_scope(pg_settings) as session:
            for customer in customers:
                rows = list(session.scalars(
                    select(Message).where(Message.conversation_id == customer.id).order_by(Message.seq)
                ))
                questions = [m for m in rows if m.role == "customer"]
                # Every message the client sent is stored once, in order, each acknowledged with its stored answer.
                assert [m.client_message_id for m in questions] == list(customer.texts), customer.name
                assert [m.text for m in questions] == list(customer.texts.values())
                assert list(customer.acknowledged) == list(customer.texts)
                answers = [m for m in rows if m.role == "bot"]
                assert sorted(a.reply_to_id for a in answers) == sorted(q.id for q in questions), customer.name
                by_question = {a.reply_to_id: a.id for a in answers}
                assert [by_question[q.id] for q in questions] == list(customer.acknowledged.values())
            duplicates = session.execute(
                select(Message.conversation_id, Message.client_message_id, func.count())
                .where(Message.client_message_id.is_not(None))
                .group_by(Message.conversation_id, Message.client_message_id)
                .having(func.count() > 1)
            ).all()
            assert duplicates == []
            expected = list(session.scalars(
                select(ConversationEvent.seq)
                .where(ConversationEvent.conversation_id == watched.id, ConversationEvent.audience == "all")
                .order_by(ConversationEvent.seq)
            ))
        # The live stream stayed open through the crash and showed every event once. Mostly in order: an event whose
        # transaction took its seq before a later one committed first comes when it commits (live.events.EventFeed).
        def complete(frames) -> bool:
            ids = [int(x["id"]) for x in frames if "id" in x]
            return len(ids) == len(set(ids)) and sorted(ids) == expected

        assert stream.wait(complete), f"stream {stream.ids()} expected {expected}"
        assert not stream.ended.is_set()

        # And the server answers a brand-new customer normally.
        fresh = Customer(server.base, "fresh")
        assert fresh._send("fresh-0", "Hello, is anyone there?") is not None
        fresh.client.close()
    finally:
        stream.close()
        for customer in customers:
            customer.client.close()
