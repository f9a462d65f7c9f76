"""What the console shows of the learning loop: suggestions by status (the most asked first), their counts, and one
suggestion with the conversations merged into it and its PII-redacted transcript. Each suggestion carries its review
flags: placeholders and identifiers that may still belong to one customer's case.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from support_bot.core.errors import InvalidInput
from support_bot.handoff.presence import display_names
from support_bot.learning.generalize import review_flags
from support_bot.learning.suggestions import STATUSES
from support_bot.models import FaqSuggestion, Message
from support_bot.safety.pii import redact

MAX_TRANSCRIPT_MESSAGES = 200


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


def payload(suggestion: FaqSuggestion, *, names: dict[str, str] | None = None) -> dict[str, Any]:
    names = names or {}
    return {
        "id": suggestion.id,
        "conversation_id": suggestion.conversation_id,
        "question": suggestion.question,
        "answer": suggestion.answer,
        "status": suggestion.status,
        # What may still be specific to one customer's case; from the current wording, so a reword clears it.
        "review_flags": review_flags(suggestion.question, suggestion.answer),
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
    names = display_names(session, {s.reviewed_by for s in rows})
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
