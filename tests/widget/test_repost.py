"""Re-posting a message (the widget recovering from a dropped connection) never stores or answers it twice."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from ingest.pipeline import ingest_path
from support_bot.chat.service import Assistant
from support_bot.chat.store import start_conversation
from support_bot.core.db import session_scope
from support_bot.llm.backends.fake import FakeEngine
from support_bot.models import Message

DEMO_FAQ = Path(__file__).resolve().parents[2] / "examples" / "demo-faq.csv"
QUESTION = "How long do refunds take?"

# A re-post that waited for an answer nobody is writing would hang for llm.timeout_s: the timeout catches that.
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def assistant(kb):
    kb.llm.timeout_s = 3600
    kb.safety.enabled = False
    job = ingest_path(settings=kb, path=DEMO_FAQ, source_name="faq")
    assert job.status == "succeeded", job.error
    return Assistant(kb, engine=FakeEngine(delay_s=0.02))


def new_conversation(assistant: Assistant) -> str:
    with session_scope(assistant.settings) as session:
        conversation, _ = start_conversation(session=session, settings=assistant.settings)
        return conversation.id


def messages(assistant: Assistant, conv_id: str) -> list[Message]:
    with session_scope(assistant.settings) as session:
        rows = list(session.scalars(select(Message).where(Message.conversation_id == conv_id).order_by(Message.seq)))
        session.expunge_all()
    return rows


def drop_mid_answer(assistant: Assistant, conv_id: str, cid: str) -> None:
    """Start answering, read one token, then go away as a lost connection does."""
    turn = assistant.turn(conversation_id=conv_id, text=QUESTION, client_message_id=cid)
    assert next(turn).event == "token"
    turn.close()


def test_reposting_an_answered_message_returns_the_stored_answer(assistant):
    conv_id = new_conversation(assistant)
    first = list(assistant.turn(conversation_id=conv_id, text=QUESTION, client_message_id="c-1"))
    calls = len(assistant.engine.calls)
    again = list(assistant.turn(conversation_id=conv_id, text=QUESTION, client_message_id="c-1"))
    assert [e.event for e in again] == ["done"]
    assert again[0].data == first[-1].data
    assert len(assistant.engine.calls) == calls  # not generated again
    assert [m.role for m in messages(assistant, conv_id)] == ["customer", "bot"]


def test_reposting_a_message_whose_answer_was_dropped_answers_it_now(assistant):
    conv_id = new_conversation(assistant)
    drop_mid_answer(assistant, conv_id, "c-2")
    assert [m.role for m in messages(assistant, conv_id)] == ["customer"]
    calls = len(assistant.engine.calls)
    again = list(assistant.turn(conversation_id=conv_id, text=QUESTION, client_message_id="c-2"))
    assert again[0].event == "token" and again[-1].event == "done"
    assert len(assistant.engine.calls) == calls + 1
    rows = messages(assistant, conv_id)
    assert [m.role for m in rows] == ["customer", "bot"]
    assert rows[1].reply_to_id == rows[0].id and again[-1].data["message_id"] == rows[1].id
    # Answered now: a third post gets the stored answer.
    assert [e.event for e in assistant.turn(conversation_id=conv_id, text=QUESTION, client_message_id="c-2")] == [
        "done"
    ]


def test_concurrent_reposts_of_a_dropped_answer_answer_it_once(assistant):
    conv_id = new_conversation(assistant)
    drop_mid_answer(assistant, conv_id, "c-3")
    results: list[list] = []
    lock = threading.Lock()

    def repost():
        events = list(assistant.turn(conversation_id=conv_id, text=QUESTION, client_message_id="c-3"))
        with lock:
            results.append(events)

    threads = [threading.Thread(target=repost) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = messages(assistant, conv_id)
    assert [m.role for m in rows] == ["customer", "bot"]
    assert {events[-1].data["message_id"] for events in results} == {rows[1].id}
    # One of them generated the answer; the others waited for it.
    assert sorted(len(events) > 1 for events in results) == [False, False, True]
