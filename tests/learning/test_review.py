"""The learning loop's review: ops edit, approve or reject suggestions; approved ones are ingested as their own source
and the retriever then finds them.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from ingest import learned
from ingest.pipeline import run_job
from support_bot import learning
from support_bot.core.db import session_scope
from support_bot.core.errors import Conflict, InvalidInput
from support_bot.models import AuditLog, FaqSuggestion, Source, User
from support_bot.ops import audit
from tests.handoff.conftest import make_agent
from tests.learning.helpers import (  # noqa: F401 - db and suggesting are fixtures
    LOCKER_A,
    LOCKER_PARAPHRASE,
    LOCKER_Q,
    PRICE_A,
    PRICE_Q,
    SOURCE,
    approve_and_ingest,
    db,
    learned_jobs,
    resolved_chat,
    suggesting,
    suggestion_of,
    top_hit,
)

pytestmark = pytest.mark.usefixtures("suggesting")


def test_approve_ingests_the_entry_and_the_retriever_finds_a_paraphrase(db):
    agent, ops = make_agent(db, "alice"), make_agent(db, "olga", role="ops")
    result, hit = top_hit(db, LOCKER_PARAPHRASE)
    assert hit is None or hit.source != SOURCE

    conv = resolved_chat(db, agent, customer=[LOCKER_Q], agent=[LOCKER_A])
    s = suggestion_of(db, conv)
    review = approve_and_ingest(db, s.id, ops)
    assert review.suggestion.status == "approved"

    result, hit = top_hit(db, LOCKER_PARAPHRASE)
    assert not result.abstain, result.reason
    assert (hit.source, hit.entry_id, hit.answer) == (SOURCE, s.id, LOCKER_A)
    with session_scope(db) as session:
        source = session.scalar(select(Source).where(Source.name == SOURCE))
        assert (source.kind, source.active_version) == ("faq_json", 1)
        entry = session.scalar(select(AuditLog).where(AuditLog.action == "suggestion.approve"))
        assert (entry.actor_id, entry.target_id) == (ops, s.id)
        reviewed = session.get(FaqSuggestion, s.id)
        assert (reviewed.reviewed_by, reviewed.status) == (ops, "approved")

    # A second approval makes a new version holding both entries.
    other = suggestion_of(db, resolved_chat(db, agent, customer=[PRICE_Q], agent=[PRICE_A]))
    approve_and_ingest(db, other.id, ops)
    assert top_hit(db, LOCKER_PARAPHRASE)[1].entry_id == s.id
    assert top_hit(db, "Will you match a lower price from another shop?")[1].entry_id == other.id

    # Deciding twice is refused, and nothing is queued for it.
    with pytest.raises(Conflict), session_scope(db) as session:
        learned.approve(session, db, suggestion_id=s.id, actor=session.get(User, ops))
    assert len(learned_jobs(db)) == 2


def test_reject_ingests_nothing_and_withdrawing_takes_the_entry_out(db):
    agent, ops = make_agent(db, "alice"), make_agent(db, "olga", role="ops")
    s = suggestion_of(db, resolved_chat(db, agent, customer=[LOCKER_Q], agent=[LOCKER_A]))
    with session_scope(db) as session:
        review = learned.reject(session, db, suggestion_id=s.id, actor=session.get(User, ops), reason="one-off")
    assert (review.suggestion.status, review.job, review.drop_source) == ("rejected", None, False)
    assert learned_jobs(db) == []
    hit = top_hit(db, LOCKER_PARAPHRASE)[1]
    assert hit is None or hit.source != SOURCE
    with session_scope(db) as session:
        assert session.scalar(select(Source).where(Source.name == SOURCE)) is None
        entry = session.scalar(select(AuditLog).where(AuditLog.action == "suggestion.reject"))
        assert entry.detail["reason"] == "one-off" and entry.actor_id == ops
    # A rejected conversation is not suggested again, and a rejected suggestion cannot be edited or approved.
    with session_scope(db) as session:
        assert learning.suggest_from_conversation(session, s.conversation_id, db) is None
        with pytest.raises(Conflict):
            learning.edit(session, db, suggestion_id=s.id, actor=session.get(User, ops), answer="Something else.")
        with pytest.raises(Conflict):
            learning.approve(session, db, suggestion_id=s.id, actor=session.get(User, ops))

    # Withdrawing the only approved entry removes the source from the knowledge base.
    other = suggestion_of(db, resolved_chat(db, agent, customer=[PRICE_Q], agent=[PRICE_A]))
    approve_and_ingest(db, other.id, ops)
    assert top_hit(db, PRICE_Q)[1].source == SOURCE
    with session_scope(db) as session:
        review = learned.reject(session, db, suggestion_id=other.id, actor=session.get(User, ops))
    assert (review.job, review.drop_source) == (None, True)
    learned.apply(db, review)
    hit = top_hit(db, PRICE_Q)[1]
    assert hit is None or hit.source != SOURCE


def test_edits_are_validated_audited_and_re_ingest_an_approved_entry(db):
    agent, ops = make_agent(db, "alice"), make_agent(db, "olga", role="ops")
    s = suggestion_of(db, resolved_chat(db, agent, customer=[LOCKER_Q], agent=[LOCKER_A]))
    with session_scope(db) as session:
        user = session.get(User, ops)
        with pytest.raises(InvalidInput):
            learning.edit(session, db, suggestion_id=s.id, actor=user, question="   ")
        with pytest.raises(InvalidInput):
            learning.edit(session, db, suggestion_id=s.id, actor=user, answer="x" * (learning.MAX_ANSWER_CHARS + 1))
    assert suggestion_of(db, s.conversation_id).question == LOCKER_Q  # nothing stored changed

    with session_scope(db) as session:
        review = learned.edit(
            session, db, suggestion_id=s.id, actor=session.get(User, ops), question="Can I ship to a parcel locker?"
        )
    assert review.job is None  # still pending: nothing to re-ingest
    with session_scope(db) as session:
        entry = session.scalar(select(AuditLog).where(AuditLog.action == "suggestion.edit"))
        assert entry.actor_id == ops and entry.target_id == s.id
        assert entry.detail["fields"] == ["question"]
        assert entry.detail["before"]["question"] == LOCKER_Q
        assert entry.detail["after"]["question"] == "Can I ship to a parcel locker?"

    approve_and_ingest(db, s.id, ops)
    new_answer = LOCKER_A + " Lockers take parcels up to 20 kg."
    with session_scope(db) as session:
        review = learned.edit(session, db, suggestion_id=s.id, actor=session.get(User, ops), answer=new_answer)
    assert review.job is not None
    assert run_job(review.job.id, db).status == "succeeded"
    assert top_hit(db, LOCKER_PARAPHRASE)[1].answer == new_answer
    with session_scope(db) as session:
        edits = audit.entries(session, action="suggestion.edit", target_id=s.id)
    assert len(edits) == 2 and edits[0].detail["status"] == "approved"


def test_two_ops_approving_at_once_ingest_once(db):
    agent = make_agent(db, "alice")
    ops = [make_agent(db, f"ops{i}", role="ops") for i in range(4)]
    s = suggestion_of(db, resolved_chat(db, agent, customer=[LOCKER_Q], agent=[LOCKER_A]))
    barrier = threading.Barrier(len(ops))
    wins: list[str] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def approve(user_id: str) -> None:
        try:
            with session_scope(db) as session:
                user = session.get(User, user_id)
                session.get(FaqSuggestion, s.id)
                barrier.wait(timeout=30)
                learned.approve(session, db, suggestion_id=s.id, actor=user)
            with lock:
                wins.append(user_id)
        except Exception as exc:  # collected and checked below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=approve, args=(u,)) for u in ops]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert len(wins) == 1, errors
    assert len(errors) == len(ops) - 1 and all(isinstance(e, Conflict) for e in errors), errors
    jobs = learned_jobs(db)
    assert len(jobs) == 1
    assert run_job(jobs[0].id, db).status == "succeeded"
    with session_scope(db) as session:
        assert suggestion_of(db, s.conversation_id).reviewed_by == wins[0]
        assert len(audit.entries(session, action="suggestion.approve")) == 1
