"""Reviewing suggestions: ops edit, approve or reject them; the approved ones are the learned knowledge source.

Approving, rejecting and editing are conditional UPDATEs on the status read, taken under one lock (`lock_learning`),
so two ops clicking at once cannot both succeed and the source is rebuilt once per change. A merged suggestion can
still be approved or rejected on its own (it then leaves the one it was merged into).

Each returns an Outcome that says whether the approved entries changed. The approved ones are ingested together as
their own knowledge source (settings.learning.source_name): `source_file` builds its file, and `ingest.learned` hands
it to the normal ingest pipeline, so this module stays Celery- and ingest-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from support_bot.core.config import Settings
from support_bot.core.errors import Conflict, InvalidInput, NotFound
from support_bot.learning.suggestions import (
    MAX_ANSWER_CHARS,
    MAX_QUESTION_CHARS,
    embed_question,
    lock_learning,
)
from support_bot.models import FaqSuggestion, User, utcnow
from support_bot.ops import audit

# Statuses ops may still decide on; approved ones may be edited or withdrawn (rejected) too.
UNDECIDED = ("pending", "merged")
MAX_REASON_CHARS = 500
LEARNED_FILENAME = "learned-faq.json"


@dataclass(frozen=True)
class Outcome:
    """What a review did: the suggestion as it is now, and whether the approved entries (the learned source) changed."""

    suggestion: FaqSuggestion
    changes_source: bool = False


def get_suggestion(session: Session, suggestion_id: str) -> FaqSuggestion:
    suggestion = session.get(FaqSuggestion, suggestion_id) if suggestion_id else None
    if suggestion is None:
        raise NotFound("suggestion not found")
    return suggestion


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
) -> Outcome:
    """Change a suggestion's question and/or answer before (or after) approval; new wording of an approved one changes
    the source."""
    lock_learning(session)
    suggestion = get_suggestion(session, suggestion_id)
    if suggestion.status == "rejected":
        raise Conflict("this suggestion was rejected; it cannot be edited")
    values: dict[str, Any] = _changes(suggestion, question, answer)
    if not values:
        return Outcome(suggestion)
    before = {"question": suggestion.question, "answer": suggestion.answer}
    if "question" in values and suggestion.status in UNDECIDED:
        values["embedding"] = embed_question(settings, values["question"]) or suggestion.embedding
    start = suggestion.status
    _conditional(session, suggestion, start, values, "edited")
    values.pop("embedding", None)
    _edit_audit(session, actor, suggestion, before, values)
    return Outcome(suggestion, changes_source=suggestion.status == "approved")


def approve(
    session: Session, settings: Settings, *, suggestion_id: str, actor: User, question: str | None = None,
    answer: str | None = None,
) -> Outcome:
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
    return Outcome(suggestion, changes_source=True)


def reject(
    session: Session, settings: Settings, *, suggestion_id: str, actor: User, reason: str | None = None
) -> Outcome:
    """Reject a suggestion, or withdraw an approved one; kept so it is not suggested again. Withdrawing changes the
    source."""
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
    return Outcome(suggestion, changes_source=start == "approved")


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
