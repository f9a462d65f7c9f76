"""Suggestions: each conversation a person resolved becomes a suggested FAQ entry, the customer's problem and the
agent's answer, PII redacted and made general (no greetings, sign-offs, names or case numbers: see generalize).

Near-duplicates: a new suggestion whose question is at least settings.learning.duplicate_similarity cosine-similar
to a pending one's is merged into it. The pending suggestion keeps its own question and answer (ops may have edited
them already, and a person's wording is never overwritten by a machine); it counts one more occurrence and lists the
conversation among its examples, and the merged suggestion stays stored with status "merged", so ops see every
agent's answer side by side and can take the better one before approving.

Suggestions are made once a resolve commits (`subscribe` hooks them to handoff's resolve; the web app and the CLI call
it at start), and by `backfill` for conversations resolved while that was off or failed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import false, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from support_bot.core.config import Settings
from support_bot.core.db import after_commit, session_scope
from support_bot.handoff.messages import public_messages
from support_bot.handoff.queue import on_resolved
from support_bot.handoff.triggers import asks_for_person, normalize
from support_bot.learning.generalize import PLEASANTRIES, WORD, generalize, known_names
from support_bot.models import Conversation, FaqSuggestion, User
from support_bot.safety.pii import redact

log = logging.getLogger(__name__)

STATUSES = ("pending", "approved", "rejected", "merged")
MAX_QUESTION_CHARS = 2000
MAX_ANSWER_CHARS = 8000
# Any constant: the PostgreSQL advisory lock that serializes changes to suggestions.
_LOCK_KEY = 0x5B1EA2

# --- what a chat says --------------------------------------------------------------------------------------------

# What is left of a message after pleasantries must have this many words to count (names are one or two).
_MIN_WORDS = 3


def substantive(text: str) -> bool:
    """Whether a chat message says something beyond greetings, thanks and sign-offs."""
    return len(WORD.findall(PLEASANTRIES.sub(" ", text))) >= _MIN_WORDS


def problem_and_resolution(messages: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """(customer problem, agent resolution) from (role, text) pairs, or None without a substantive question and answer.

    The problem is what the customer said before the agent's first substantive reply; the resolution is everything
    substantive the agent said from then on. Other roles (the bot, system lines) are ignored.
    """
    question: list[str] = []
    answer: list[str] = []
    for role, said in messages:
        if not substantive(said):
            continue
        if role == "customer" and not answer:
            question.append(said)
        elif role == "agent" and question:
            answer.append(said)
    if not question or not answer:
        return None
    return "\n".join(question), "\n".join(answer)


# Words around a request for a person that say nothing about the problem ("I want to ... please, now").
_REQUEST_WORDS = frozenset(
    {
        "i", "we", "want", "wanna", "would", "like", "need", "to", "please", "pls", "plz", "can", "could", "may",
        "let", "me", "us", "speak", "talk", "chat", "now", "asap", "right", "just", "get", "give", "with", "a", "an",
        "the", "you", "your", "someone", "somebody", "real", "live", "human", "person", "agent", "instead", "rather",
    }
)


def _only_asks_for_person(text: str, settings: Settings) -> bool:
    # "I want to talk to a real person" is how the chat reached the agent, not the problem; "... about my refund" is.
    words = asks_for_person(text, settings)
    if words is None:
        return False
    rest = PLEASANTRIES.sub(" ", normalize(text).replace(words, " "))
    return len([w for w in WORD.findall(rest) if w not in _REQUEST_WORDS]) < _MIN_WORDS


def conversation_pair(session: Session, settings: Settings, conversation_id: str) -> tuple[str, str] | None:
    """The (problem, resolution) of a stored conversation, PII redacted and generalized (no greetings, sign-offs, names
    or case numbers: see generalize); None when it has no usable pair."""
    rows = public_messages(session, conversation_id)
    conversation = session.get(Conversation, conversation_id)
    people = {m.author_id for m in rows}
    if conversation is not None:
        people |= {conversation.assigned_agent_id, conversation.resolved_by}
    people.discard(None)
    users = session.scalars(select(User).where(User.id.in_(people))) if people else []
    names = known_names(
        (m.text for m in rows if m.role in ("customer", "agent")),
        [n for u in users for n in (u.display_name, u.username)],
    )
    pairs: list[tuple[str, str]] = []
    for m in rows:
        if m.role == "customer" and not _only_asks_for_person(m.text, settings):
            pairs.append(("customer", generalize(redact(m.text).text, names)))
        elif m.role == "agent" and m.author_id is not None:
            pairs.append(("agent", generalize(redact(m.text).text, names)))
    found = problem_and_resolution(pairs)
    if found is None:
        return None
    question = found[0].strip()[:MAX_QUESTION_CHARS]
    answer = found[1].strip()[:MAX_ANSWER_CHARS]
    cfg = settings.learning
    if len(question) < cfg.min_question_chars or len(answer) < cfg.min_answer_chars:
        return None
    return question, answer


# --- making suggestions ------------------------------------------------------------------------------------------


def lock_learning(session: Session) -> None:
    """Serialize changes to suggestions until the caller's transaction ends (merges, reviews, source rebuilds)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    elif dialect == "sqlite":
        # A write that matches nothing still takes SQLite's one write lock, and reads after it see every commit.
        session.execute(
            update(FaqSuggestion).where(false()).values(status=FaqSuggestion.status)
            .execution_options(synchronize_session=False)
        )


def embed_question(settings: Settings, question: str) -> bytes | None:
    """The question's embedding as stored float32 bytes; None when the embedder fails."""
    try:
        from support_bot.knowledge.embedder import get_embedder

        vector = get_embedder(settings).encode([question])[0]
    except Exception as exc:  # noqa: BLE001 - a suggestion without a vector is still useful, just never merged
        log.warning("learning: could not embed a suggested question (%s); it will not be merged", exc)
        return None
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _nearest_pending(session: Session, vector: bytes) -> tuple[FaqSuggestion, float] | None:
    """The pending suggestion whose question is most like this vector, and the cosine."""
    query = np.frombuffer(vector, dtype=np.float32)
    rows = session.execute(
        select(FaqSuggestion.id, FaqSuggestion.embedding).where(
            FaqSuggestion.status == "pending", FaqSuggestion.embedding.is_not(None)
        )
    ).all()
    best: tuple[str, float] | None = None
    for suggestion_id, blob in rows:
        if len(blob) != len(vector):
            continue  # another embedding model's vector cannot be compared
        score = float(np.frombuffer(blob, dtype=np.float32) @ query)
        if best is None or score > best[1]:
            best = (suggestion_id, score)
    if best is None:
        return None
    return session.get(FaqSuggestion, best[0]), best[1]


def suggest_from_conversation(session: Session, conversation_id: str, settings: Settings) -> FaqSuggestion | None:
    """Suggest an FAQ entry from a conversation a person resolved -> the new suggestion (pending, or merged into a
    near-duplicate pending one), or None: not resolved by a person, no usable question and answer, or suggested before.
    """
    if not settings.learning.enabled:
        return None
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or conversation.status != "resolved" or conversation.resolved_by is None:
        return None
    if session.scalar(select(FaqSuggestion.id).where(FaqSuggestion.conversation_id == conversation_id)) is not None:
        return None
    pair = conversation_pair(session, settings, conversation_id)
    if pair is None:
        return None
    question, answer = pair
    vector = embed_question(settings, question)
    lock_learning(session)
    suggestion = FaqSuggestion(
        conversation_id=conversation_id, question=question, answer=answer, status="pending", occurrences=1,
        examples=[], embedding=vector,
    )
    near = _nearest_pending(session, vector) if vector is not None else None
    target = near[0] if near is not None and near[1] >= settings.learning.duplicate_similarity else None
    if target is not None:
        suggestion.status = "merged"
        suggestion.merged_into_id = target.id
    try:
        # The count goes up only together with the merged row: both or neither.
        with session.begin_nested():
            session.add(suggestion)
            if target is not None:
                target.occurrences = (target.occurrences or 1) + 1
                target.examples = [*(target.examples or []), conversation_id]
            session.flush()
    except IntegrityError:
        # The same conversation was suggested a moment ago by someone else (a backfill beside a resolve).
        session.expire_all()
        return None
    if target is not None:
        log.info(
            "learning: conversation %s merged into suggestion %s (cosine %.2f)", conversation_id, target.id, near[1]
        )
    return suggestion


def suggest_after_commit(session: Session, settings: Settings, conversation_id: str) -> None:
    """Suggest from the conversation once the caller's transaction commits; a failure is logged, never raised."""
    if settings.learning.enabled:
        after_commit(session, functools.partial(_suggest_logged, settings, conversation_id))


def _suggest_logged(settings: Settings, conversation_id: str) -> None:
    try:
        with session_scope(settings) as own:
            suggest_from_conversation(own, conversation_id, settings)
    except Exception:  # the resolve has committed; a missing suggestion can be made later by a backfill
        log.exception("learning: could not suggest an FAQ entry from conversation %s", conversation_id)


@dataclass
class BackfillReport:
    checked: int = 0
    suggested: int = 0
    merged: int = 0
    skipped: int = 0
    failed: int = 0

    def payload(self) -> dict[str, int]:
        return dict(vars(self))


def backfill(settings: Settings, *, limit: int | None = None) -> BackfillReport:
    """Suggest from every conversation a person resolved that has no suggestion yet, oldest first."""
    report = BackfillReport()
    with session_scope(settings) as session:
        query = (
            select(Conversation.id)
            .outerjoin(FaqSuggestion, FaqSuggestion.conversation_id == Conversation.id)
            .where(Conversation.status == "resolved", Conversation.resolved_by.is_not(None), FaqSuggestion.id.is_(None))
            .order_by(Conversation.resolved_at, Conversation.id)
        )
        if limit is not None:
            query = query.limit(max(0, limit))
        ids = list(session.scalars(query))
    for conversation_id in ids:
        report.checked += 1
        try:
            with session_scope(settings) as session:
                made = suggest_from_conversation(session, conversation_id, settings)
                status = made.status if made is not None else None
        except Exception:  # one bad conversation must not stop the rest
            log.exception("learning: backfill of conversation %s failed", conversation_id)
            report.failed += 1
            continue
        if status == "pending":
            report.suggested += 1
        elif status == "merged":
            report.merged += 1
        else:
            report.skipped += 1
    return report


def subscribe() -> None:
    """Suggest from every conversation a person resolves in this process from now on; calling it again changes nothing.

    Entry points that resolve conversations (the web app, the CLI) call it at start; handoff cannot call learning.
    """
    # Best effort once the resolve has committed: a suggestion that fails is logged, the resolve stands.
    on_resolved(suggest_after_commit)
