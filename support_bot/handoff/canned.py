"""Canned responses: saved replies agents pick instead of typing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from support_bot.core.config import Settings
from support_bot.core.errors import Conflict, InvalidInput, NotFound
from support_bot.handoff.messages import validate_text
from support_bot.handoff.presence import check_agent
from support_bot.models import CannedResponse, User
from support_bot.ops import audit


def canned_payload(canned: CannedResponse) -> dict[str, Any]:
    return {
        "id": canned.id,
        "title": canned.title,
        "text": canned.text,
        "created_by": canned.created_by,
        "created_at": canned.created_at.isoformat() if canned.created_at else None,
    }


def list_canned(session: Session) -> list[CannedResponse]:
    return list(session.scalars(select(CannedResponse).order_by(CannedResponse.title)))


def create_canned(session: Session, settings: Settings, *, actor: User, title: str, text: str) -> CannedResponse:
    check_agent(actor)
    title = (title or "").strip()
    if not title or len(title) > 255:
        raise InvalidInput("the title must be 1 to 255 characters")
    text = validate_text(settings, text, what="canned response")
    if session.scalar(select(CannedResponse.id).where(CannedResponse.title == title)) is not None:
        raise Conflict(f"a canned response called '{title}' exists already")
    canned = CannedResponse(title=title, text=text, created_by=actor.id)
    session.add(canned)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a canned response called '{title}' exists already") from None
    audit.record(
        session, actor=actor, action="canned.create", target_type="canned_response", target_id=str(canned.id),
        detail={"title": title},
    )
    return canned


def delete_canned(session: Session, *, actor: User, canned_id: int) -> None:
    check_agent(actor)
    canned = session.get(CannedResponse, canned_id)
    if canned is None:
        raise NotFound("canned response not found")
    audit.record(
        session, actor=actor, action="canned.delete", target_type="canned_response", target_id=str(canned.id),
        detail={"title": canned.title},
    )
    session.delete(canned)
