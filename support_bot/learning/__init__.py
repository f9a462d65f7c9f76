"""The learning loop: each conversation a person resolved becomes a suggested FAQ entry for ops to review.

A suggestion is the customer's problem and the agent's answer, PII redacted. Ops edit, approve or reject it; the
approved ones are ingested together as their own knowledge source (settings.learning.source_name), so the next
customer who asks gets the answer with that entry cited.

Near-duplicates: a new suggestion whose question is at least settings.learning.duplicate_similarity cosine-similar
to a pending one's is merged into it. The pending suggestion keeps its own question and answer (ops may have edited
them already, and a person's wording is never overwritten by a machine); it counts one more occurrence and lists the
conversation among its examples, and the merged suggestion stays stored with status "merged", so ops see every
agent's answer side by side and can take the better one before approving. A merged suggestion can still be approved
or rejected on its own (it then leaves the one it was merged into).

Approving, rejecting and editing are conditional UPDATEs on the status read, taken under one lock
(`lock_learning`), so two ops clicking at once cannot both succeed and the source is rebuilt once per change.

This module is Celery- and ingest-free: `source_file` builds the learned source's file, and `ingest.learned` hands
it to the normal ingest pipeline.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import false, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from support_bot.ops import audit
from support_bot import handoff
from support_bot.core.config import Settings
from support_bot.core.db import after_commit, session_scope
from support_bot.core.errors import Conflict, InvalidInput, NotFound
from support_bot.models import Conversation, FaqSuggestion, Message, User, utcnow
from support_bot.safety.pii import redact

log = logging.getLogger(__name__)

STATUSES = ("pending", "approved", "rejected", "merged")
# Statuses ops may still decide on; approved ones may be edited or withdrawn (rejected) too.
UNDECIDED = ("pending", "merged")
MAX_QUESTION_CHARS = 2000
MAX_ANSWER_CHARS = 8000
MAX_REASON_CHARS = 500
MAX_TRANSCRIPT_MESSAGES = 200
LEARNED_FILENAME = "learned-faq.json"
# Any constant: the PostgreSQL advisory lock that serializes changes to suggestions.
_LOCK_KEY = 0x5B1EA2

# --- what a chat says --------------------------------------------------------------------------------------------

# Pleasantries that carry no problem or resolution; a message that is nothing but these (and a name or two) is skipped.
_PLEASANTRIES = re.compile(
    r"\b(?:hi|hello|hey|hiya|good (?:morning|afternoon|evening)|greetings|dear|"
    r"thanks?(?: you)?(?: (?:so|very) much)?(?: for (?:contacting|reaching out|getting in touch|chatting|your patience)"
    r"(?: (?:to|with))?(?: \w+)?(?: support)?)?|thx|ty|many thanks|much appreciated|cheers|ok(?:ay)?|"
    r"great|perfect|awesome|cool|"
    r"(?:good)?bye|see you|take care|have a (?:great|nice|good|lovely) (?:day|one|evening|weekend)|"
    r"you'?re welcome|no problem|no worries|my pleasure|glad (?:i|we) could help|happy to help|"
    r"(?:is there )?anything else(?: i can (?:help|do)(?: you)?(?: with)?)?(?: today)?|"
    r"how (?:can|may) i (?:help|assist)(?: you)?(?: today)?|what can i do for you(?: today)?|"
    r"my name is|this is|i'?m|i am|you are|speaking|here|from|support|team|that'?s all|that is all|all good|"
    r"it works(?: now)?|that worked|that did it|solved|fixed)\b",
    re.I,
)
_WORD = re.compile(r"[^\W_]+")
# What is left of a message after pleasantries must have this many words to count (names are one or two).
_MIN_WORDS = 3


def substantive(text: str) -> bool:
    """Whether a chat message says something beyond greetings, thanks and sign-offs."""
    return len(_WORD.findall(_PLEASANTRIES.sub(" ", text))) >= _MIN_WORDS


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
    words = handoff.asks_for_person(text, settings)
    if words is None:
        return False
    rest = _PLEASANTRIES.sub(" ", handoff.normalize(text).replace(words, " "))
    return len([w for w in _WORD.findall(rest) if w not in _REQUEST_WORDS]) < _MIN_WORDS


def conversation_pair(session: Session, settings: Settings, conversation_id: str) -> tuple[str, str] | None:
    """The (problem, resolution) of a stored conversation, PII redacted; None when it has no usable pair."""
    pairs: list[tuple[str, str]] = []
    for m in handoff.public_messages(session, conversation_id):
        if m.role == "customer" and not _only_asks_for_person(m.text, settings):
            pairs.append(("customer", m.text.strip()))
        elif m.role == "agent" and m.author_id is not None:
            pairs.append(("agent", m.text.strip()))
    found = problem_and_resolution(pairs)
    if found is None:
        return None
    question = redact(found[0]).text.strip()[:MAX_QUESTION_CHARS]
    answer = redact(found[1]).text.strip()[:MAX_ANSWER_CHARS]
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


def _embed(settings: Settings, question: str) -> bytes | None:
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
    vector = _embed(settings, question)
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


# --- reviewing -----------------------------------------------------------------------------------------------------


def get_suggestion(session: Session, suggestion_id: str) -> FaqSuggestion:
    suggestion = session.get(FaqSuggestion, suggestion_id) if suggestion_id else None
    if suggestion is None:
        raise NotFound("suggestion not found")
    return suggestion


def list_suggestions(
    session: Session, *, status: str | None = "pending", limit: int = 50, offset: int = 0
) -> tuple[list[FaqSuggestion], int]:
    """Suggestions of one status (None: all), the most asked first, then the newest -> (page, total)."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)} (or all)")
    where = [FaqSuggestion.status == status] if status is not None else []
    total = session.scalar(select(func.count()).select_from(FaqSuggestion).where(*where)) or 0
    rows = session.scalars(
        select(FaqSuggestion)
        .where(*where)
        .order_by(FaqSuggestion.occurrences.desc(), FaqSuggestion.created_at.desc(), FaqSuggestion.id)
        .limit(max(1, min(limit, 500)))
        .offset(max(0, offset))
    )
    return list(rows), total


def status_counts(session: Session) -> dict[str, int]:
    found = dict(session.execute(select(FaqSuggestion.status, func.count()).group_by(FaqSuggestion.status)).all())
    return {s: int(found.get(s, 0)) for s in STATUSES}


def _clean(value: str | None, *, what: str, limit: int) -> str | None:
    if value is None:
        return None
    value = value.replace("\r\n", "\n").strip()
    if not value:
        raise InvalidInput(f"the {what} must not be empty")
    if len(value) > limit:
        raise InvalidInput(f"the {what} is longer than {limit} characters")
    return value


def _changes(suggestion: FaqSuggestion, question: str | None, answer: str | None) -> dict[str, str]:
    question = _clean(question, what="question", limit=MAX_QUESTION_CHARS)
    answer = _clean(answer, what="answer", limit=MAX_ANSWER_CHARS)
    values: dict[str, str] = {}
    if question is not None and question != suggestion.question:
        values["question"] = question
    if answer is not None and answer != suggestion.answer:
        values["answer"] = answer
    return values


def _excerpt(value: str) -> str:
    return value if len(value) <= 300 else value[:299] + "…"


def _conditional(session: Session, suggestion: FaqSuggestion, start: str, values: dict[str, Any], doing: str) -> None:
    """One UPDATE on the status read; Conflict when someone else changed the suggestion first."""
    result = session.execute(
        update(FaqSuggestion)
        .where(FaqSuggestion.id == suggestion.id, FaqSuggestion.status == start)
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    session.refresh(suggestion)
    if result.rowcount != 1:
        raise Conflict(f"someone else {suggestion.status} this suggestion first; it cannot be {doing} now")


def _detach(session: Session, suggestion: FaqSuggestion) -> None:
    # A merged suggestion decided on its own no longer counts towards the one it was merged into.
    target = session.get(FaqSuggestion, suggestion.merged_into_id) if suggestion.merged_into_id else None
    if target is None:
        return
    examples = [c for c in (target.examples or []) if c != suggestion.conversation_id]
    target.examples = examples
    target.occurrences = max(1, (target.occurrences or 1) - 1)


def _edit_audit(
    session: Session, actor: User, suggestion: FaqSuggestion, before: dict[str, str], values: dict[str, str]
) -> None:
    audit.record(
        session, actor=actor, action="suggestion.edit", target_type="faq_suggestion", target_id=suggestion.id,
        detail={
            "fields": sorted(values),
            "before": {k: _excerpt(before[k]) for k in values},
            "after": {k: _excerpt(v) for k, v in values.items()},
            "status": suggestion.status,
        },
    )


def edit(
    session: Session, settings: Settings, *, suggestion_id: str, actor: User, question: str | None = None,
    answer: str | None = None,
) -> FaqSuggestion:
    """Change a suggestion's question and/or answer before (or after) approval; an approved one needs a rebuild."""
    lock_learning(session)
    suggestion = get_suggestion(session, suggestion_id)
    if suggestion.status == "rejected":
        raise Conflict("this suggestion was rejected; it cannot be edited")
    values: dict[str, Any] = _changes(suggestion, question, answer)
    if not values:
        return suggestion
    before = {"question": suggestion.question, "answer": suggestion.answer}
    if "question" in values and suggestion.status in UNDECIDED:
        values["embedding"] = _embed(settings, values["question"]) or suggestion.embedding
    start = suggestion.status
    _conditional(session, suggestion, start, values, "edited")
    values.pop("embedding", None)
    _edit_audit(session, actor, suggestion, before, values)
    return suggestion


def approve(
    session: Session, settings: Settings, *, suggestion_id: str, actor: User, question: str | None = None,
    answer: str | None = None,
) -> FaqSuggestion:
    """Approve a pending (or merged) suggestion, with optional last edits; the caller then rebuilds the source."""
    lock_learning(session)
    suggestion = get_suggestion(session, suggestion_id)
    start = suggestion.status
    if start not in UNDECIDED:
        raise Conflict(f"this suggestion is {start} already")
    changes = _changes(suggestion, question, answer)
    before = {"question": suggestion.question, "answer": suggestion.answer}
    if start == "merged":
        _detach(session, suggestion)
    _conditional(
        session, suggestion, start,
        {**changes, "status": "approved", "reviewed_by": actor.id, "reviewed_at": utcnow(), "merged_into_id": None},
        "approved",
    )
    if changes:
        _edit_audit(session, actor, suggestion, before, changes)
    audit.record(
        session, actor=actor, action="suggestion.approve", target_type="faq_suggestion", target_id=suggestion.id,
        detail={
            "conversation_id": suggestion.conversation_id, "from": start, "occurrences": suggestion.occurrences,
            "question": _excerpt(suggestion.question), "source": settings.learning.source_name,
        },
    )
    return suggestion


def reject(
    session: Session, settings: Settings, *, suggestion_id: str, actor: User, reason: str | None = None
) -> tuple[FaqSuggestion, str]:
    """Reject a suggestion, or withdraw an approved one -> (suggestion, the status it had); kept so it is not
    suggested again. A withdrawn approved one needs a rebuild of the source."""
    lock_learning(session)
    suggestion = get_suggestion(session, suggestion_id)
    start = suggestion.status
    if start == "rejected":
        raise Conflict("this suggestion is rejected already")
    reason = (reason or "").strip()[:MAX_REASON_CHARS] or None
    if start == "merged":
        _detach(session, suggestion)
    _conditional(
        session, suggestion, start,
        {"status": "rejected", "reviewed_by": actor.id, "reviewed_at": utcnow(), "merged_into_id": None},
        "rejected",
    )
    audit.record(
        session, actor=actor, action="suggestion.reject", target_type="faq_suggestion", target_id=suggestion.id,
        detail={"conversation_id": suggestion.conversation_id, "from": start, "reason": reason},
    )
    return suggestion, start


# --- the learned source ------------------------------------------------------------------------------------------


def approved(session: Session) -> list[FaqSuggestion]:
    """Approved suggestions in the order they were approved: the learned source's entries."""
    return list(
        session.scalars(
            select(FaqSuggestion)
            .where(FaqSuggestion.status == "approved")
            .order_by(FaqSuggestion.reviewed_at, FaqSuggestion.id)
        )
    )


def source_file(session: Session, settings: Settings) -> tuple[str, bytes] | None:
    """(file name, FAQ JSON bytes) of the learned source from every approved suggestion; None when none is approved.

    The same approved entries always give the same bytes, so an unchanged set is recognised by the pipeline.
    """
    rows = approved(session)
    if not rows:
        return None
    entries = [{"id": s.id, "question": s.question, "answer": s.answer} for s in rows]
    data = json.dumps({"entries": entries}, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")
    return LEARNED_FILENAME, data


# --- what the console shows ----------------------------------------------------------------------------------------


def _names(session: Session, ids: set[str | None]) -> dict[str, str]:
    ids = {i for i in ids if i}
    if not ids:
        return {}
    return {u.id: handoff.display_name(u) or u.username for u in session.scalars(select(User).where(User.id.in_(ids)))}


def payload(suggestion: FaqSuggestion, *, names: dict[str, str] | None = None) -> dict[str, Any]:
    names = names or {}
    return {
        "id": suggestion.id,
        "conversation_id": suggestion.conversation_id,
        "question": suggestion.question,
        "answer": suggestion.answer,
        "status": suggestion.status,
        "occurrences": suggestion.occurrences,
        "examples": list(suggestion.examples or []),
        "merged_into_id": suggestion.merged_into_id,
        "reviewed_by": (
            {"id": suggestion.reviewed_by, "name": names.get(suggestion.reviewed_by)}
            if suggestion.reviewed_by
            else None
        ),
        "reviewed_at": suggestion.reviewed_at.isoformat() if suggestion.reviewed_at else None,
        "created_at": suggestion.created_at.isoformat() if suggestion.created_at else None,
        "updated_at": suggestion.updated_at.isoformat() if suggestion.updated_at else None,
    }


def payloads(session: Session, rows: list[FaqSuggestion]) -> list[dict[str, Any]]:
    names = _names(session, {s.reviewed_by for s in rows})
    return [payload(s, names=names) for s in rows]


def transcript(session: Session, conversation_id: str | None) -> list[dict[str, str]]:
    """What customer, bot and agents said in the conversation (never internal notes), PII redacted."""
    if not conversation_id:
        return []
    rows = session.scalars(
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.private.is_(False))
        .order_by(Message.seq.desc())
        .limit(MAX_TRANSCRIPT_MESSAGES)
    )
    return [{"role": m.role, "text": redact(m.text).text} for m in reversed(list(rows))]


def detail_payload(session: Session, suggestion: FaqSuggestion) -> dict[str, Any]:
    """One suggestion with the conversations merged into it (their own question and answer) and its transcript."""
    merged = list(
        session.scalars(
            select(FaqSuggestion)
            .where(FaqSuggestion.merged_into_id == suggestion.id, FaqSuggestion.status == "merged")
            .order_by(FaqSuggestion.created_at, FaqSuggestion.id)
        )
    )
    data = payloads(session, [suggestion])[0]
    data["merged"] = payloads(session, merged)
    data["transcript"] = transcript(session, suggestion.conversation_id)
    return data
