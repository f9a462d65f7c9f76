"""The message store: stored times are right in any local time zone, and a question is answered once."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from support_bot.chat.store import (
    AbandonedAnswers,
    record_customer_message,
    start_conversation,
    store_reply,
    wait_for_reply,
)
from support_bot.core.db import session_scope
from support_bot.models import Message, utcnow

# Local zones west and east of UTC: a naive UTC time read as local lands hours off in either direction.
ZONES = ["America/New_York", "Asia/Tokyo"]
# The same zones as POSIX rules, for a system without the zone database.
POSIX = {"America/New_York": "EST5EDT,M3.2.0,M11.1.0", "Asia/Tokyo": "JST-9"}


@pytest.fixture(params=ZONES)
def local_zone(request):
    """Run the test with the process's local time zone set to one far from UTC."""
    name = request.param
    zone = name if Path("/usr/share/zoneinfo", name).is_file() else POSIX[name]
    saved = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        assert time.localtime().tm_gmtoff != 0  # else the test could not tell naive UTC from local time
        yield name
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


def new_conversation(settings) -> str:
    with session_scope(settings) as session:
        conversation, _token = start_conversation(session=session, settings=settings)
        return conversation.id


def bot_replies(settings, question_id: str) -> list[Message]:
    with session_scope(settings) as session:
        return list(session.scalars(select(Message).where(Message.reply_to_id == question_id)))


def test_a_repost_waits_for_the_answer_in_progress_and_it_is_stored_once(db, local_zone):
    db.llm.timeout_s = 60
    conv_id = new_conversation(db)
    before = time.time()
    question, reply, created = record_customer_message(db, conversation_id=conv_id, text="hi", client_message_id="c1")
    assert created and reply is None
    # The re-post (the widget retrying a dropped request) finds the stored message, read back from the database.
    again, reply, created = record_customer_message(db, conversation_id=conv_id, text="hi", client_message_id="c1")
    assert not created and reply is None and again.id == question.id
    assert again.created_at.tzinfo is not None and again.created_at.utcoffset() == timedelta(0)
    assert abs(again.created_at.timestamp() - before) < 60

    # The original request is still answering; the re-post must wait for that answer rather than write its own.
    def original_answers():
        time.sleep(0.3)
        store_reply(db, question, "the answer", [], abstained=False)

    answering = threading.Thread(target=original_answers)
    answering.start()
    abandoned = AbandonedAnswers()
    try:
        waited = wait_for_reply(db, again, abandoned)
    finally:
        answering.join()
    assert waited is not None and waited.text == "the answer"
    [stored] = bot_replies(db, question.id)
    assert stored.id == waited.id


def test_a_repost_of_a_question_nobody_answers_stops_waiting_at_the_model_timeout(db, local_zone):
    db.llm.timeout_s = 5
    conv_id = new_conversation(db)
    with session_scope(db) as session:
        # Posted longer ago than the model timeout: whoever was answering it gave up long since.
        session.add(Message(conversation_id=conv_id, role="customer", text="hi", client_message_id="c2",
                            created_at=utcnow() - timedelta(seconds=30)))
    again, reply, created = record_customer_message(db, conversation_id=conv_id, text="hi", client_message_id="c2")
    assert not created and reply is None
    abandoned = AbandonedAnswers()
    result: list = []
    waiter = threading.Thread(target=lambda: result.append(wait_for_reply(db, again, abandoned)), daemon=True)
    waiter.start()
    waiter.join(timeout=20)
    finished = not waiter.is_alive()
    abandoned.mark(again.id)  # ends a wait that is still going, so a failure does not leave it running
    waiter.join(timeout=5)
    assert finished, "the re-post went on waiting past the model timeout"
    assert result == [None]


def test_a_second_reply_to_one_question_returns_the_first(db):
    conv_id = new_conversation(db)
    question, _reply, _created = record_customer_message(db, conversation_id=conv_id, text="hi", client_message_id=None)
    first = store_reply(db, question, "first answer", [], abstained=False)
    second = store_reply(db, question, "second answer", [], abstained=True)
    assert second.id == first.id and second.text == "first answer"
    assert [m.id for m in bot_replies(db, question.id)] == [first.id]

