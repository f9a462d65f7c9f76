"""The live event streams over HTTP: replay and resume, audiences, tokens, live delivery, typing, heartbeats, endings."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from support_bot.core.config import Settings
from support_bot.core.db import session_scope
from support_bot.live.events import emit, get_bus, notify_typing
from tests.conftest import add_user
from tests.web.conftest import BOTH_DATABASES
from tests.web.helpers import login, new_conversation
from web.app import create_app
from web.api.events import close_streams

# A stream test that goes wrong must fail, not hang: every stream here also ends by itself (?timeout=).
pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_buses", "fast_hashing")]


@pytest.fixture
def web(console_settings):
    with TestClient(create_app(console_settings)) as client:
        yield client


# -- helpers -----------------------------------------------------------------------------------------------------


def parse_frames(lines: Iterator[str]) -> Iterator[dict]:
    """SSE frames as dicts: "id", "event", "retry", "data" (parsed JSON) and "comment" for `:` lines."""
    frame: dict = {}
    for line in lines:
        if line == "":
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            frame["comment"] = line[1:].strip()
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            frame[field] = json.loads(value) if field == "data" else value
    if frame:
        yield frame


def emit_now(settings: Settings, conv: str, kind: str, data: dict, audience: str = "all") -> int:
    with session_scope(settings) as session:
        return emit(session, conversation_id=conv, kind=kind, data=data, audience=audience).seq


def replay(client: TestClient, url: str, **kwargs) -> list[dict]:
    """Everything a stream that ends at once (?timeout=0) sends, minus the opening `retry:` frame."""
    res = client.get(url, params={"timeout": 0, **kwargs.pop("params", {})}, **kwargs)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/event-stream")
    frames = list(parse_frames(iter(res.text.split("\n"))))
    assert frames[0] == {"retry": "2000"}
    return frames[1:]


# -- the customer's stream ---------------------------------------------------------------------------------------


@BOTH_DATABASES
def test_replay_sends_the_customers_events_in_order_and_never_console_only_ones(web, console_settings):
    conv, headers = new_conversation(web)
    other, _ = new_conversation(web)
    m1 = emit_now(console_settings, conv, "message", {"id": "m1", "role": "customer", "text": "hello"})
    emit_now(console_settings, conv, "note", {"text": "customer seems upset"}, audience="console")
    emit_now(console_settings, other, "message", {"id": "x", "role": "customer", "text": "someone else"})
    st = emit_now(console_settings, conv, "status", {"status": "queued", "reason": "button", "agent": None})

    res = web.get(f"/api/conversations/{conv}/events", params={"timeout": 0}, headers=headers)
    assert "customer seems upset" not in res.text and "someone else" not in res.text
    frames = replay(web, f"/api/conversations/{conv}/events", headers=headers)
    assert frames == [
        {"id": str(m1), "event": "message",
         "data": {"id": "m1", "role": "customer", "text": "hello", "conversation_id": conv}},
        {"id": str(st), "event": "status",
         "data": {"status": "queued", "reason": "button", "agent": None, "conversation_id": conv}},
    ]


def test_resume_after_last_event_id_or_after_parameter(web, console_settings):
    conv, headers = new_conversation(web)
    seqs = [emit_now(console_settings, conv, "message", {"text": str(i)}) for i in range(4)]
    url = f"/api/conversations/{conv}/events"

    def ids(frames):
        return [int(f["id"]) for f in frames]

    assert ids(replay(web, url, headers={**headers, "Last-Event-ID": str(seqs[1])})) == seqs[2:]
    assert ids(replay(web, url, headers=headers, params={"after": seqs[2]})) == seqs[3:]
    # Both given: the later one wins (the header is what a reconnecting EventSource sends).
    assert ids(replay(web, url, headers={**headers, "Last-Event-ID": str(seqs[2])}, params={"after": seqs[0]})) == [
        seqs[3]
    ]
    assert replay(web, url, headers=headers, params={"after": seqs[3]}) == []
    bad = web.get(url, headers={**headers, "Last-Event-ID": "12; drop"}, params={"timeout": 0})
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["detail"]
    assert web.get(url, headers=headers, params={"after": -1, "timeout": 0}).status_code == 422


def test_a_wrong_token_gets_404_and_learns_nothing(web, console_settings):
    conv, headers = new_conversation(web)
    other, other_headers = new_conversation(web)
    emit_now(console_settings, conv, "message", {"text": "secret order number 4411"})
    attempts = [
        (f"/api/conversations/{conv}/events", {}),
        (f"/api/conversations/{conv}/events", {"Authorization": "Bearer not-the-token"}),
        (f"/api/conversations/{conv}/events", {"Authorization": headers["Authorization"].replace("Bearer", "Basic")}),
        (f"/api/conversations/{conv}/events", other_headers),
        ("/api/conversations/no-such-conversation/events", headers),
    ]
    for url, hdrs in attempts:
        res = web.get(url, headers=hdrs, params={"timeout": 0})
        assert res.status_code == 404, (url, hdrs, res.text)
        assert res.json() == {"detail": "conversation not found"}
        assert "4411" not in res.text


def test_live_events_reach_an_open_stream_and_a_disconnect_ends_it(web, console_settings):
    conv, headers = new_conversation(web)
    earlier = emit_now(console_settings, conv, "message", {"text": "before connecting"})
    bus = get_bus(console_settings)
    with web.stream("GET", f"/api/conversations/{conv}/events", headers=headers, params={"timeout": 60}) as res:
        assert res.status_code == 200
        frames = parse_frames(res.iter_lines())
        assert next(frames) == {"retry": "2000"}  # sent once the stream has subscribed
        assert next(frames)["id"] == str(earlier)
        assert bus.subscriber_count() == 1
        live = emit_now(
            console_settings, conv, "message", {"text": "from the agent", "role": "agent", "author": "Dana"}
        )
        emit_now(console_settings, conv, "note", {"text": "internal"}, audience="console")
        status = emit_now(console_settings, conv, "status", {"status": "assigned", "agent": "Dana"})
        got = [next(frames), next(frames)]
        assert [(f["id"], f["event"]) for f in got] == [(str(live), "message"), (str(status), "status")]
        assert got[0]["data"]["author"] == "Dana"
    # Leaving the `with` disconnects: the stream's generator ended and let go of its subscription.
    assert bus.subscriber_count() == 0
    assert web.app.state.event_streams == set()


def test_typing_from_the_agent_is_shown_without_an_id_and_the_customers_own_is_not(web, console_settings):
    conv, headers = new_conversation(web)
    with web.stream("GET", f"/api/conversations/{conv}/events", headers=headers, params={"timeout": 60}) as res:
        frames = parse_frames(res.iter_lines())
        assert next(frames) == {"retry": "2000"}
        notify_typing(console_settings, conversation_id=conv, who="customer")
        notify_typing(console_settings, conversation_id=conv, who="agent", name="Dana")
        notify_typing(console_settings, conversation_id=conv, who="agent", name="Dana", typing=False)
        first, second = next(frames), next(frames)
    assert first == {
        "event": "typing", "data": {"conversation_id": conv, "who": "agent", "name": "Dana", "typing": True}
    }
    assert second["data"]["typing"] is False and "id" not in second


def test_a_quiet_stream_sends_heartbeat_comments_and_stays_open(console_settings):
    events = console_settings.events.model_copy(update={"heartbeat_s": 0.05})
    quick = console_settings.model_copy(update={"events": events})
    with TestClient(create_app(quick)) as client:
        conv, headers = new_conversation(client)
        with client.stream("GET", f"/api/conversations/{conv}/events", headers=headers, params={"timeout": 60}) as res:
            frames = parse_frames(res.iter_lines())
            assert next(frames) == {"retry": "2000"}
            assert next(frames) == {"comment": "ping"}
            seq = emit_now(quick, conv, "message", {"text": "still here"})
            # More pings may come first; the event follows them on the same stream.
            frame = next(frames)
            while frame == {"comment": "ping"}:
                frame = next(frames)
            assert frame["id"] == str(seq)


def test_the_timeout_parameter_ends_the_stream_after_the_replay(web, console_settings):
    conv, headers = new_conversation(web)
    seq = emit_now(console_settings, conv, "message", {"text": "one"})
    res = web.get(f"/api/conversations/{conv}/events", headers=headers, params={"timeout": 0})
    assert res.status_code == 200
    assert [f.get("id") for f in parse_frames(iter(res.text.split("\n")))] == [None, str(seq)]
    assert get_bus(console_settings).subscriber_count() == 0


def test_closing_the_apps_streams_ends_open_streams_cleanly(web, console_settings):
    """What the app's shutdown (and `support-bot serve` on SIGTERM) does to streams still open."""
    conv, headers = new_conversation(web)
    connected, outcome = threading.Event(), queue.Queue()

    def reader():
        try:
            with web.stream("GET", f"/api/conversations/{conv}/events", headers=headers,
                            params={"timeout": 90}) as res:
                frames = parse_frames(res.iter_lines())
                next(frames)
                connected.set()
                outcome.put(("ended", list(frames)))
        except Exception as exc:  # reported to the test thread
            outcome.put(("error", exc))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    assert connected.wait(30)
    close_streams(web.app)
    result, rest = outcome.get(timeout=60)
    assert result == "ended" and rest == []
    thread.join(10)
    # A stream opened while the app is closing replays and ends at once.
    emit_now(console_settings, conv, "message", {"text": "late"})
    with web.stream("GET", f"/api/conversations/{conv}/events", headers=headers, params={"timeout": 90}) as res:
        assert [f.get("event") for f in parse_frames(res.iter_lines())] == [None, "message"]



def test_an_app_started_again_after_a_shutdown_streams_again(console_settings):
    app = create_app(console_settings)
    with TestClient(app) as client:
        conv, headers = new_conversation(client)
    assert app.state.events_closing
    with TestClient(app) as client:
        with client.stream("GET", f"/api/conversations/{conv}/events", headers=headers,
                           params={"timeout": 60}) as res:
            frames = parse_frames(res.iter_lines())
            assert next(frames) == {"retry": "2000"}
            seq = emit_now(console_settings, conv, "message", {"text": "live after a restart"})
            assert next(frames)["id"] == str(seq)


# -- the console's stream ----------------------------------------------------------------------------------------


def test_console_stream_needs_an_agent_or_admin(web, console_settings):
    res = web.get("/api/console/events", params={"timeout": 0})
    assert res.status_code == 401 and "log in" in res.json()["detail"]
    add_user(console_settings, "olivia", "ops")
    login(web, "olivia")
    res = web.get("/api/console/events", params={"timeout": 0})
    assert res.status_code == 403
    for name, role in (("dana", "agent"), ("ada", "admin")):
        add_user(console_settings, name, role)
        login(web, name)
        assert web.get("/api/console/events", params={"timeout": 0}).status_code == 200


@BOTH_DATABASES
def test_console_stream_carries_every_conversation_and_console_only_events(web, console_settings):
    add_user(console_settings, "dana", "agent")
    a, _ = new_conversation(web)
    b, _ = new_conversation(web)
    before = emit_now(console_settings, a, "message", {"text": "before"})
    login(web, "dana")
    # Without a resume point the whole queue's stream starts from now...
    assert replay(web, "/api/console/events") == []
    note = emit_now(console_settings, a, "note", {"text": "VIP customer"}, audience="console")
    queued = emit_now(console_settings, b, "status", {"status": "queued"})
    frames = replay(web, "/api/console/events", params={"after": before})
    assert [(f["id"], f["event"], f["data"]["conversation_id"]) for f in frames] == [
        (str(note), "note", a), (str(queued), "status", b)
    ]
    # ...while one conversation's replays from its start, console-only events included.
    frames = replay(web, "/api/console/events", params={"conversation_id": a})
    assert [f["id"] for f in frames] == [str(before), str(note)]
    res = web.get("/api/console/events", params={"conversation_id": "nope", "timeout": 0})
    assert res.status_code == 404


def test_console_stream_gets_live_events_and_customer_typing(web, console_settings):
    add_user(console_settings, "dana", "agent")
    conv, _ = new_conversation(web)
    login(web, "dana")
    with web.stream("GET", "/api/console/events", params={"timeout": 60}) as res:
        frames = parse_frames(res.iter_lines())
        assert next(frames) == {"retry": "2000"}
        notify_typing(console_settings, conversation_id=conv, who="customer")
        note = emit_now(console_settings, conv, "note", {"text": "call back tomorrow"}, audience="console")
        # Typing is not stored, so it has no place in the events' order: either may come first.
        got = {f["event"]: f for f in (next(frames), next(frames))}
    typing, event = got["typing"], got["note"]
    assert typing == {"event": "typing",
                      "data": {"conversation_id": conv, "who": "customer", "name": None, "typing": True}}
    assert (event["id"], event["event"], event["data"]["text"]) == (str(note), "note", "call back tomorrow")


# -- Redis going away and coming back ----------------------------------------------------------------------------


def test_streams_poll_while_redis_is_down_and_lose_nothing_across_a_restart(console_settings, own_redis):
    """Kill and restart a private redis-server under an open stream: every event arrives once, in order."""
    from support_bot.live.events import RedisBus
    from support_bot.models import ConversationEvent

    # A heartbeat far longer than the test: an event can only arrive through a wake-up or through polling.
    events = console_settings.events.model_copy(
        update={"heartbeat_s": 3600, "poll_interval_s": 0.1, "reconnect_max_s": 0.2,
                "channel_prefix": f"sbtest-{uuid.uuid4().hex[:10]}:"}
    )
    settings = console_settings.model_copy(update={"redis_url": own_redis.url, "events": events})
    other_process = RedisBus(own_redis.url, prefix=events.channel_prefix)
    received: queue.Queue = queue.Queue()
    with TestClient(create_app(settings)) as client:
        conv, headers = new_conversation(client)
        bus = get_bus(settings)
        assert bus.wait_ready(15)

        def reader():
            with client.stream("GET", f"/api/conversations/{conv}/events", headers=headers,
                               params={"timeout": 100}) as res:
                for frame in parse_frames(res.iter_lines()):
                    received.put(frame)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        assert received.get(timeout=30) == {"retry": "2000"}

        def next_event() -> dict:
            return received.get(timeout=30)

        def insert_without_wakeup(text: str) -> int:
            # What another web process's commit looks like when its publish is lost: a row and no message.
            with session_scope(settings) as session:
                row = ConversationEvent(conversation_id=conv, kind="message", audience="all", data={"text": text})
                session.add(row)
                session.flush()
                return row.seq

        sent = [emit_now(settings, conv, "message", {"text": "up"})]
        assert next_event()["id"] == str(sent[-1])

        own_redis.stop()
        deadline = time.monotonic() + 15
        while bus.healthy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not bus.healthy
        sent.append(insert_without_wakeup("while down, from elsewhere"))  # found by polling the database
        assert next_event()["id"] == str(sent[-1])
        sent.append(emit_now(settings, conv, "message", {"text": "while down, from here"}))
        assert next_event()["id"] == str(sent[-1])

        own_redis.start()
        assert bus.wait_ready(30)
        sent.append(emit_now(settings, conv, "message", {"text": "back up"}))
        assert next_event()["id"] == str(sent[-1])
        # A wake-up that only travels through the restarted Redis, from another connection.
        seq = insert_without_wakeup("from the other process")
        other_process.publish(f"conv:{conv}", {"type": "event", "seq": seq, "conversation_id": conv,
                                              "kind": "message", "audience": "all"})
        sent.append(seq)
        assert next_event()["id"] == str(sent[-1])
        other_process.close()
        close_streams(client.app)
        thread.join(30)
    assert received.empty()  # nothing twice, nothing extra
    assert sent == sorted(sent)
