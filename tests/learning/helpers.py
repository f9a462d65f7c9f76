"""The learning loop's test data and fixtures, shared by its tests here and the console's (tests/console)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from ingest import learned
from ingest.pipeline import ingest_path, run_job
from support_bot import handoff, learning
from support_bot.core.db import migrate, session_scope
from support_bot.knowledge.retriever import Retriever
from support_bot.models import Conversation, FaqSuggestion, IngestJob, User
from tests.handoff.conftest import make_conversation

DEMO_FAQ = Path(__file__).resolve().parents[2] / "examples" / "demo-faq.csv"
SOURCE = "learned-faq"

LOCKER_Q = "Can I ship my order to a parcel locker?"
LOCKER_PARAPHRASE = "Is delivery to a parcel locker possible?"
LOCKER_A = (
    "Yes. At checkout choose Parcel locker delivery and pick a locker on the map; the parcel waits there for 72 hours "
    "and the opening code comes by text message."
)
PRICE_Q = "Do you price match other stores?"
PRICE_A = "We match the price of any authorised dealer for the same item in stock; show us the offer within 14 days."


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, settings, embedder):
    """A migrated database with the demo FAQ live, so learned entries compete with real ones."""
    if request.param == "postgres":
        settings = settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})
    migrate(settings)
    job = ingest_path(settings=settings, path=DEMO_FAQ, source_name="demo-faq")
    assert job.status == "succeeded", job.error
    return settings


@pytest.fixture
def suggesting():
    """Resolving a chat suggests from it, as in the running app, which subscribes the learning loop at start."""
    learning.subscribe()


def resolved_chat(settings, agent_id: str, customer: list[str], agent: list[str]) -> str:
    """A chat handed to a person through the real handoff functions: queued, claimed, answered and resolved."""
    conv = make_conversation(settings, *customer)
    with session_scope(settings) as session:
        handoff.start_handoff(session, settings, session.get(Conversation, conv), reason="request")
    with session_scope(settings) as session:
        user = session.get(User, agent_id)
        handoff.claim(session, settings, conversation_id=conv, agent=user)
        for text in agent:
            handoff.agent_reply(session, settings, conversation_id=conv, agent=user, text=text)
    with session_scope(settings) as session:
        handoff.resolve(session, settings, conversation_id=conv, agent=session.get(User, agent_id))
    return conv


def suggestion_of(settings, conv_id: str) -> FaqSuggestion | None:
    with session_scope(settings) as session:
        row = session.scalar(select(FaqSuggestion).where(FaqSuggestion.conversation_id == conv_id))
        if row is not None:
            session.expunge(row)
        return row


def learned_jobs(settings) -> list[IngestJob]:
    with session_scope(settings) as session:
        rows = list(session.scalars(select(IngestJob).where(IngestJob.source_name == SOURCE)))
        session.expunge_all()
        return rows


def approve_and_ingest(settings, suggestion_id: str, actor_id: str, **edits) -> learned.Review:
    """Approve as ops, commit, then run the learned source's job here (instead of on a worker thread)."""
    with session_scope(settings) as session:
        review = learned.approve(
            session, settings, suggestion_id=suggestion_id, actor=session.get(User, actor_id), **edits
        )
    assert review.job is not None
    job = run_job(review.job.id, settings)
    assert job.status == "succeeded", job.error
    return review


def top_hit(settings, question: str):
    result = Retriever(settings).search(question)
    return result, (result.hits[0] if result.hits else None)
