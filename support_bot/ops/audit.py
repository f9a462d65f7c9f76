"""The audit log: who did what to which conversation, user or setting, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from support_bot.models import AuditLog, User


def record(
    session: Session,
    *,
    actor: User | None,
    action: str,
    target_type: str = "",
    target_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditLog:
    """Add one audit entry in the caller's transaction, so it commits or rolls back with the change it describes."""
    entry = AuditLog(
        actor_id=actor.id if actor is not None else None,
        actor_name=(actor.display_name or actor.username) if actor is not None else "system",
        action=action,
        target_type=target_type,
        target_id=target_id,
        detail=detail or {},
    )
    session.add(entry)
    return entry


def entries(
    session: Session,
    *,
    action: str | None = None,
    actor_id: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditLog]:
    """Newest first, optionally filtered."""
    q = select(AuditLog)
    if action:
        q = q.where(AuditLog.action == action)
    if actor_id:
        q = q.where(AuditLog.actor_id == actor_id)
    if target_id:
        q = q.where(AuditLog.target_id == target_id)
    if since is not None:
        q = q.where(AuditLog.created_at >= since)
    if until is not None:
        q = q.where(AuditLog.created_at < until)
    q = q.order_by(AuditLog.id.desc()).limit(max(1, min(limit, 1000))).offset(max(0, offset))
    return list(session.scalars(q))


def payload(entry: AuditLog) -> dict[str, Any]:
    return {
        "id": entry.id,
        "actor_id": entry.actor_id,
        "actor": entry.actor_name,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "detail": entry.detail or {},
        "created_at": entry.created_at.isoformat() if entry.created_at else None,
    }
