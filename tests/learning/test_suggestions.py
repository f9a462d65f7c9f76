"""The learning loop's suggestions: resolved chats become suggested FAQ entries, merged when they ask the same."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import func, select

from support_bot import handoff, learning
from support_bot.core.db import session_scope
from support_bot.learning import suggestions
from support_bot.models import Conversation, FaqSuggestion, User
from tests.handoff.conftest import make_agent, make_conversation
from tests.learning.helpers import (  # noqa: F401 - db and suggesting are fixtures
    LOCKER_A,
    LOCKER_PARAPHRASE,
    LOCKER_Q,
    PRICE_A,
    PRICE_Q,
    db,
    resolved_chat,
    suggesting,
    suggestion_of,
)

pytestmark = pytest.mark.usefixtures("suggesting")


def test_a_resolved_conversation_yields_one_suggestion_with_pii_redacted(db):
    agent = make_agent(db, "alice")
    conv = resolved_chat(
        db, agent,
        customer=[
            "I want to talk to a real person please",
            "The locker code for my order never came. Write to sam.jones@example.com or call +1 415 555 0134.",
        ],
        agent=[
            "Hi, I'm Alice.",
            "Locker codes are sent by text message when the parcel is placed; I have sent yours again to "
            "+1 415 555 0134 and it stays valid for 72 hours.",
            "Thanks for chatting with us!",
        ],
    )
    with session_scope(db) as session:
        assert session.get(Conversation, conv).status == "resolved"
        rows = list(session.scalars(select(FaqSuggestion)))
    assert len(rows) == 1
    s = rows[0]
    assert (s.conversation_id, s.status, s.occurrences, s.examples) == (conv, "pending", 1, [])
    # The problem, not the request for a person; the answer, not the greeting or the sign-off.
    assert s.question == "The locker code for my order never came. Write to [EMAIL] or call [PHONE]."
    assert s.answer == (
        "Locker codes are sent by text message when the parcel is placed; I have sent yours again to [PHONE] and it "
        "stays valid for 72 hours."
    )
    assert s.embedding is not None and len(s.embedding) == 384 * 4
    # Resolving again later (a new episode) does not suggest the same conversation twice.
    with session_scope(db) as session:
        assert learning.suggest_from_conversation(session, conv, db) is None
        assert session.scalar(select(func.count()).select_from(FaqSuggestion)) == 1


def test_conversations_without_a_person_or_a_usable_answer_yield_none(db):
    agent = make_agent(db, "alice")
    bot_only = make_conversation(db, "How long does shipping take?", status="resolved")
    only_greetings = resolved_chat(db, agent, customer=[LOCKER_Q], agent=["Hi, I'm Alice.", "Have a great day!"])
    too_short = resolved_chat(db, agent, customer=["Help?", "Locker?"], agent=["Yes it works that way, sure."])
    open_chat = make_conversation(db, LOCKER_Q)
    with session_scope(db) as session:
        for conv in (bot_only, only_greetings, too_short, open_chat):
            assert learning.suggest_from_conversation(session, conv, db) is None
        assert learning.suggest_from_conversation(session, "no-such-conversation", db) is None
    assert all(suggestion_of(db, c) is None for c in (bot_only, only_greetings, too_short, open_chat))


def test_paraphrased_duplicates_merge_into_the_pending_suggestion(db):
    agent = make_agent(db, "alice")
    first = resolved_chat(db, agent, customer=[LOCKER_Q], agent=[LOCKER_A])
    second = resolved_chat(
        db, agent, customer=[LOCKER_PARAPHRASE], agent=["Sure, choose the locker option at checkout."]
    )
    other = resolved_chat(db, agent, customer=[PRICE_Q], agent=[PRICE_A])

    target, merged, separate = (suggestion_of(db, c) for c in (first, second, other))
    assert (target.status, target.occurrences, target.examples) == ("pending", 2, [second])
    # The pending suggestion keeps its own wording; the merged one stays visible beside it.
    assert (target.question, target.answer) == (LOCKER_Q, LOCKER_A)
    assert (merged.status, merged.merged_into_id) == ("merged", target.id)
    assert (separate.status, separate.occurrences, separate.merged_into_id) == ("pending", 1, None)
    with session_scope(db) as session:
        detail = learning.detail_payload(session, learning.get_suggestion(session, target.id))
        pending, total = learning.list_suggestions(session, status="pending")
    assert [m["answer"] for m in detail["merged"]] == ["Sure, choose the locker option at checkout."]
    assert [line["role"] for line in detail["transcript"]][:2] == ["customer", "bot"]
    # The most asked first.
    assert [p.id for p in pending] == [target.id, separate.id] and total == 2

    # Approving the merged one on its own splits it off again.
    ops = make_agent(db, "olga", role="ops")
    with session_scope(db) as session:
        learning.approve(session, db, suggestion_id=merged.id, actor=session.get(User, ops))
    target = suggestion_of(db, first)
    assert (target.occurrences, target.examples) == (1, [])


def test_a_failing_suggestion_never_fails_the_resolve(db, monkeypatch, caplog):
    agent = make_agent(db, "alice")

    def broken(*_args, **_kwargs):
        raise RuntimeError("embedding service on fire")

    monkeypatch.setattr(suggestions, "suggest_from_conversation", broken)
    with caplog.at_level(logging.ERROR, logger="support_bot.learning"):
        conv = resolved_chat(db, agent, customer=[LOCKER_Q], agent=[LOCKER_A])
    with session_scope(db) as session:
        assert session.get(Conversation, conv).status == "resolved"
    assert "could not suggest" in caplog.text
    assert suggestion_of(db, conv) is None

    # The backfill makes it later.
    monkeypatch.undo()
    report = learning.backfill(db)
    assert (report.checked, report.suggested, report.failed) == (1, 1, 0)
    assert suggestion_of(db, conv).question == LOCKER_Q
    assert learning.backfill(db).checked == 0


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_cli_backfill_suggests_from_chats_resolved_before(db, monkeypatch, capsys):
    import json

    from support_bot.cli import main

    agent = make_agent(db, "alice")
    # Resolved while the learning loop was off: no suggestions yet.
    off = db.model_copy(update={"learning": db.learning.model_copy(update={"enabled": False})})
    chats = [
        resolved_chat(off, agent, customer=[LOCKER_Q], agent=[LOCKER_A]),
        resolved_chat(off, agent, customer=[LOCKER_PARAPHRASE], agent=[LOCKER_A]),
        resolved_chat(off, agent, customer=[PRICE_Q], agent=["Hi, I'm Alice.", "Bye!"]),
    ]
    assert all(suggestion_of(db, c) is None for c in chats)
    assert main(["learn", "backfill"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"checked": 3, "suggested": 1, "merged": 1, "skipped": 1, "failed": 0}
    assert suggestion_of(db, chats[0]).occurrences == 2
    # Again: only the chat without a usable answer is looked at (and skipped) once more.
    assert main(["learn", "backfill"]) == 0
    assert json.loads(capsys.readouterr().out) == {"checked": 1, "suggested": 0, "merged": 0, "skipped": 1, "failed": 0}


def test_a_rolled_back_resolve_suggests_nothing(db):
    agent = make_agent(db, "alice")
    conv = make_conversation(db, LOCKER_Q)
    with session_scope(db) as session:
        handoff.start_handoff(session, db, session.get(Conversation, conv), reason="request")
    with session_scope(db) as session:
        user = session.get(User, agent)
        handoff.claim(session, db, conversation_id=conv, agent=user)
        handoff.agent_reply(session, db, conversation_id=conv, agent=user, text=LOCKER_A)
    with pytest.raises(RuntimeError), session_scope(db) as session:
        handoff.resolve(session, db, conversation_id=conv, agent=session.get(User, agent))
        raise RuntimeError("the request failed after the resolve")
    assert suggestion_of(db, conv) is None
    with session_scope(db) as session:
        assert session.get(Conversation, conv).status == "assigned"
