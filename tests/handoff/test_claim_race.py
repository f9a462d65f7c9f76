"""Claims are atomic: agents claiming one conversation at the same moment, and one agent racing its own capacity."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from support_bot.ops import audit
from support_bot import handoff
from support_bot.core.db import session_scope
from support_bot.core.errors import Conflict
from support_bot.models import Conversation, User
from tests.handoff.conftest import make_agent, make_conversation

N = 8


def race(settings, jobs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[Exception]]:
    """Run claim(conversation, agent) for every job in its own thread, all released at once."""
    barrier = threading.Barrier(len(jobs))
    wins: list[tuple[str, str]] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def claim(conv_id: str, agent_id: str) -> None:
        try:
            with session_scope(settings) as session:
                agent = session.get(User, agent_id)
                session.get(Conversation, conv_id)
                barrier.wait(timeout=30)
                handoff.claim(session, settings, conversation_id=conv_id, agent=agent)
            with lock:
                wins.append((conv_id, agent_id))
        except Exception as exc:  # collected and checked below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=claim, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return wins, errors


def queued(settings, text: str) -> str:
    conv = make_conversation(settings, text)
    with session_scope(settings) as session:
        handoff.start_handoff(session, settings, session.get(Conversation, conv), reason="request")
    return conv


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_agents_claiming_one_conversation_at_once_exactly_one_wins(db):
    agents = [make_agent(db, f"agent{i}") for i in range(N)]
    conv = queued(db, "please help")
    wins, errors = race(db, [(conv, a) for a in agents])
    assert len(wins) == 1, errors
    assert len(errors) == N - 1 and all(isinstance(e, Conflict) for e in errors), errors
    winner = wins[0][1]
    with session_scope(db) as session:
        c = session.get(Conversation, conv)
        assert (c.status, c.assigned_agent_id) == ("assigned", winner)
        claims = audit.entries(session, action="conversation.claim", target_id=conv)
        assert [e.actor_id for e in claims] == [winner]


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_one_agent_claiming_several_at_once_stays_within_capacity(db):
    agent = make_agent(db, "solo", capacity=2)
    convs = [queued(db, f"question {i}") for i in range(N)]
    wins, errors = race(db, [(c, agent) for c in convs])
    assert len(wins) == 2 and len(errors) == N - 2, errors
    assert all(isinstance(e, Conflict) and "capacity" in e.detail for e in errors)
    with session_scope(db) as session:
        held = session.scalars(
            select(Conversation.id).where(Conversation.assigned_agent_id == agent, Conversation.status == "assigned")
        ).all()
        assert sorted(held) == sorted(c for c, _ in wins)
        assert session.scalar(select(Conversation).where(Conversation.status == "queued").limit(1)) is not None


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_concurrent_claims_on_sqlite_also_have_one_winner(db):
    agents = [make_agent(db, f"agent{i}") for i in range(4)]
    conv = queued(db, "please help")
    wins, errors = race(db, [(conv, a) for a in agents])
    assert len(wins) == 1 and len(errors) == 3 and all(isinstance(e, Conflict) for e in errors), errors
