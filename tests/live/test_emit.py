"""Storing events: wake-ups only after commit, nothing on rollback, replay by seq and audience."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from support_bot.core.db import get_engine, session_scope
from support_bot.core.errors import InvalidInput
from support_bot.live.events import (
    CONSOLE_AUDIENCE,
    CUSTOMER_AUDIENCE,
    EventFeed,
    emit,
    events_after,
    get_bus,
    latest_seq,
    notify_typing,
    payload,
)
from support_bot.models import ConversationEvent, utcnow
from tests.live.conftest import new_conversation


def _wakes(sub) -> list[int]:
    return [m["seq"] for m in sub.drain() if m.get("type") == "event"]


def test_emit_wakes_both_channels_only_after_commit(db):
    conv = new_conversation(db)
    bus = get_bus(db)
    conv_sub, console_sub = bus.subscribe([f"conv:{conv}"]), bus.subscribe(["console"])
    with session_scope(db) as session:
        row = emit(session, conversation_id=conv, kind="message", data={"id": "m1", "text": "hi"})
        assert row.seq > 0
        assert conv_sub.drain() == [] and console_sub.drain() == []  # not committed yet
    assert _wakes(conv_sub) == [row.seq]
    assert _wakes(console_sub) == [row.seq]


def test_rollback_publishes_nothing_and_stores_nothing(db):
    conv = new_conversation(db)
    sub = get_bus(db).subscribe(["console"])
    with pytest.raises(RuntimeError):
        with session_scope(db) as session:
            emit(session, conversation_id=conv, kind="status", data={"status": "queued"})
            raise RuntimeError("the handoff failed after the event was added")
    assert sub.drain() == []
    with session_scope(db) as session:
        assert events_after(session, conversation_id=conv, after_seq=0, audience=CONSOLE_AUDIENCE) == []


def test_a_session_closed_without_commit_publishes_nothing_and_later_commits_are_not_affected(db):
    conv = new_conversation(db)
    sub = get_bus(db).subscribe(["console"])
    session = Session(get_engine(db), info={"settings": db})
    emit(session, conversation_id=conv, kind="status", data={"status": "queued"})
    session.close()
    assert sub.drain() == []
    emit(session, conversation_id=conv, kind="status", data={"status": "bot"})
    session.commit()
    assert len(_wakes(sub)) == 1


def test_savepoints_wait_for_the_outer_commit_and_rolled_back_savepoints_are_dropped(db):
    conv = new_conversation(db)
    sub = get_bus(db).subscribe(["console"])
    with session_scope(db) as session:
        with session.begin_nested():
            kept = emit(session, conversation_id=conv, kind="note", data={"text": "kept"}, audience="console")
        assert sub.drain() == []  # released savepoint, outer transaction still open
        try:
            with session.begin_nested():
                emit(session, conversation_id=conv, kind="note", data={"text": "dropped"}, audience="console")
                raise ValueError
        except ValueError:
            pass
        outer = emit(session, conversation_id=conv, kind="status", data={"status": "queued"})
    assert _wakes(sub) == [kept.seq, outer.seq]
    with session_scope(db) as session:
        texts = [e.data.get("text") for e in events_after(session, conversation_id=conv, after_seq=0,
                                                          audience=CONSOLE_AUDIENCE)]
    assert texts == ["kept", None]


def test_events_after_filters_by_seq_conversation_and_audience(db):
    a, b = new_conversation(db), new_conversation(db)
    with session_scope(db) as session:
        m1 = emit(session, conversation_id=a, kind="message", data={"text": "one"})
        note = emit(session, conversation_id=a, kind="note", data={"text": "private"}, audience="console")
        emit(session, conversation_id=b, kind="message", data={"text": "other chat"})
        m2 = emit(session, conversation_id=a, kind="message", data={"text": "two"})
    with session_scope(db) as session:
        customer = events_after(session, conversation_id=a, after_seq=0, audience=CUSTOMER_AUDIENCE)
        assert [e.seq for e in customer] == [m1.seq, m2.seq]
        console = events_after(session, conversation_id=a, after_seq=0, audience=CONSOLE_AUDIENCE)
        assert [e.seq for e in console] == [m1.seq, note.seq, m2.seq]
        assert [e.seq for e in events_after(session, conversation_id=a, after_seq=m1.seq,
                                            audience=CUSTOMER_AUDIENCE)] == [m2.seq]
        everything = events_after(session, conversation_id=None, after_seq=0, audience=CONSOLE_AUDIENCE)
        assert len(everything) == 4
        assert latest_seq(session) == m2.seq
        assert latest_seq(session, conversation_id=b) == everything[2].seq
        body = payload(console[1])
        assert body["kind"] == "note" and body["audience"] == "console" and body["data"] == {"text": "private"}


def test_bad_events_are_refused_before_anything_is_stored(db):
    conv = new_conversation(db)
    with session_scope(db) as session:
        with pytest.raises(InvalidInput, match="audience"):
            emit(session, conversation_id=conv, kind="note", data={}, audience="everyone")
        for kind in ("", "message\ndata: {}", "x" * 33):
            with pytest.raises(InvalidInput, match="kind"):
                emit(session, conversation_id=conv, kind=kind, data={})
        with pytest.raises(InvalidInput, match="JSON"):
            emit(session, conversation_id=conv, kind="note", data={"when": object()})
        assert session.query(ConversationEvent).count() == 0


def test_typing_is_published_but_not_stored(db):
    conv = new_conversation(db)
    bus = get_bus(db)
    conv_sub, console_sub = bus.subscribe([f"conv:{conv}"]), bus.subscribe(["console"])
    notify_typing(db, conversation_id=conv, who="agent", name="Dana")
    expected = {"type": "typing", "conversation_id": conv, "who": "agent", "name": "Dana", "typing": True}
    assert conv_sub.drain() == [expected]
    assert console_sub.drain() == [expected]
    with pytest.raises(InvalidInput):
        notify_typing(db, conversation_id=conv, who="robot")
    with session_scope(db) as session:
        assert latest_seq(session) == 0


def _row(conv: str, seq: int, text: str, audience: str = "all") -> ConversationEvent:
    return ConversationEvent(seq=seq, conversation_id=conv, kind="message", audience=audience, data={"text": text})


def test_feed_sends_each_event_once_including_a_late_commit_of_an_earlier_seq(db):
    conv = new_conversation(db)
    feed = EventFeed(conversation_id=conv, audience=CUSTOMER_AUDIENCE, after_seq=0)
    with session_scope(db) as session:
        session.add_all([_row(conv, 100, "first"), _row(conv, 101, "note", audience="console")])
    with session_scope(db) as session:
        assert [e.data["text"] for e in feed.read(session)] == ["first"]
        assert feed.read(session) == []
        assert feed.position == 100
    # A transaction that was handed seq 90 before seq 100 was, but committed after the feed read 100.
    with session_scope(db) as session:
        session.add(_row(conv, 90, "late"))
    with session_scope(db) as session:
        assert [e.data["text"] for e in feed.read(session)] == ["late"]
        assert feed.read(session) == []
        assert feed.position == 100


@pytest.mark.postgres
def test_feed_catches_transactions_that_commit_out_of_seq_order_on_postgres(db, postgres_url):
    pg = db.model_copy(update={"database_url": postgres_url})
    from support_bot.core.db import migrate

    migrate(pg)
    conv = new_conversation(pg)
    feed = EventFeed(conversation_id=conv, audience=CUSTOMER_AUDIENCE, after_seq=0)
    slow, fast = Session(get_engine(pg), info={"settings": pg}), Session(get_engine(pg), info={"settings": pg})
    try:
        early = emit(slow, conversation_id=conv, kind="message", data={"text": "slow"})
        later = emit(fast, conversation_id=conv, kind="message", data={"text": "fast"})
        assert early.seq < later.seq
        fast.commit()
        with session_scope(pg) as session:
            assert [e.seq for e in feed.read(session)] == [later.seq]
            # What a reader asking only for seq > last sent would miss for good:
            assert events_after(session, conversation_id=conv, after_seq=later.seq, audience=CUSTOMER_AUDIENCE) == []
        slow.commit()
        with session_scope(pg) as session:
            assert [e.seq for e in feed.read(session)] == [early.seq]
    finally:
        slow.close()
        fast.close()


def test_feed_forgets_events_older_than_its_window_and_respects_the_start(db):
    conv = new_conversation(db)
    with session_scope(db) as session:
        old = emit(session, conversation_id=conv, kind="message", data={"text": "before"})
    feed = EventFeed(conversation_id=conv, audience=CUSTOMER_AUDIENCE, after_seq=old.seq, late_window_s=30)
    with session_scope(db) as session:
        assert feed.read(session) == []  # created recently, but at or below the client's resume point
        new = emit(session, conversation_id=conv, kind="message", data={"text": "after"})
    with session_scope(db) as session:
        assert [e.seq for e in feed.read(session)] == [new.seq]
        later = utcnow() + timedelta(minutes=5)
        assert feed.read(session, now=later) == []
        assert feed._sent == {}
