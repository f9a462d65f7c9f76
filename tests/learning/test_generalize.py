"""Suggested FAQ entries are general: no greeting, sign-off or names, no order numbers; what may still be specific to
one case is flagged for review, in the JSON the console reads and on its page."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from support_bot import learning
from support_bot.core.db import session_scope
from support_bot.models import FaqSuggestion, User
from tests.handoff.conftest import make_agent
from tests.learning.helpers import (  # noqa: F401 - db and suggesting are fixtures
    LOCKER_A,
    LOCKER_Q,
    db,
    resolved_chat,
    suggesting,
    suggestion_of,
)

pytestmark = pytest.mark.usefixtures("suggesting")

SAM = [
    "Hello, my name is Sam Jones.",
    "Hi, my order #5521 never arrived and the tracking number 1Z999AA10123456784 shows nothing. Can you help?",
]
DANA = [
    "Hi Sam, I'm Dana from the support team and I'm looking into order 5521 now.",
    (
        "Sorry about that, Sam! Parcels that show no tracking scan after 5 days are treated as lost: we send a "
        "replacement at no cost, and the new tracking link comes by e-mail within a day."
    ),
    "Is there anything else I can help you with? Have a great day!\nBest regards,\nDana",
]


def payload_of(settings, suggestion_id: str) -> dict:
    with session_scope(settings) as session:
        return learning.payloads(session, [learning.get_suggestion(session, suggestion_id)])[0]


def test_greetings_names_and_order_numbers_leave_the_suggestion(db):
    agent = make_agent(db, "dscully", display_name="Dana Scully")
    conv = resolved_chat(db, agent, customer=SAM, agent=DANA)
    s = suggestion_of(db, conv)
    assert s is not None and s.status == "pending"
    assert s.question == (
        "My order [NUMBER] never arrived and the tracking number [NUMBER] shows nothing. Can you help?"
    )
    assert s.answer == (
        "I'm looking into order [NUMBER] now.\n"
        "Parcels that show no tracking scan after 5 days are treated as lost: we send a replacement at no cost, and "
        "the new tracking link comes by e-mail within a day."
    )
    for text in (s.question, s.answer):
        for specific in ("Sam", "Jones", "Dana", "Scully", "5521", "1Z999AA10123456784", "Hi", "Hello", "regards"):
            assert specific not in text


def test_a_name_or_number_that_stays_behind_is_flagged_until_ops_reword_it(db):
    agent = make_agent(db, "dscully", display_name="Dana Scully")
    conv = resolved_chat(
        db, agent,
        customer=["My parcel for ticket 88123 is stuck at the depot, what now?"],
        agent=[
            (
                "Dana here. I asked Dana Scully's colleague at the depot; it goes out again today with label AB12345 "
                "and you can write to help@example.com if it does not."
            )
        ],
    )
    s = suggestion_of(db, conv)
    assert s.question == "My parcel for ticket [NUMBER] is stuck at the depot, what now?"
    assert s.answer == (
        "I asked [NAME]'s colleague at the depot; it goes out again today with label AB12345 and you can write to "
        "[EMAIL] if it does not."
    )
    flags = payload_of(db, s.id)["review_flags"]
    assert {(f["field"], f["kind"], f["text"]) for f in flags} == {
        ("question", "placeholder", "[NUMBER]"),
        ("answer", "placeholder", "[NAME]"),
        ("answer", "placeholder", "[EMAIL]"),
        ("answer", "identifier", "AB12345"),
    }
    assert all(f["message"] for f in flags)

    ops = make_agent(db, "olga", role="ops")
    with session_scope(db) as session:
        learning.edit(
            session, db, suggestion_id=s.id, actor=session.get(User, ops),
            question="My parcel is stuck at the depot, what now?",
            answer="A parcel stuck at the depot goes out again the next working day.",
        )
    assert payload_of(db, s.id)["review_flags"] == []


def test_a_general_answer_is_kept_word_for_word_and_not_flagged(db):
    agent = make_agent(db, "alice")
    conv = resolved_chat(db, agent, customer=[LOCKER_Q], agent=["Hi, I'm Alice.", LOCKER_A, "Thanks, bye!"])
    s = suggestion_of(db, conv)
    assert (s.question, s.answer) == (LOCKER_Q, LOCKER_A)
    assert payload_of(db, s.id)["review_flags"] == []
    with session_scope(db) as session:
        assert session.scalar(select(FaqSuggestion.id).where(FaqSuggestion.conversation_id == conv)) == s.id
