"""What the agents' console lists and opens: the queue in the order to take it, conversations by status or agent,
one conversation with its transcript, notes and sources, and the agents to transfer to.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from support_bot.core.config import Settings
from support_bot.core.errors import InvalidInput
from support_bot.handoff.messages import message_payload
from support_bot.handoff.presence import (
    AGENT_ROLES,
    aware,
    display_name,
    display_names,
    effective_presence,
    load_of,
)
from support_bot.handoff.queue import (
    STATUSES,
    get_conversation,
    queue_order,
    queue_position,
)
from support_bot.handoff.triggers import REASON_LABELS
from support_bot.models import Conversation, Message, User, utcnow


def _preview(session: Session, conversation_id: str) -> str:
    text = session.scalar(
        select(Message.text)
        .where(Message.conversation_id == conversation_id, Message.role == "customer", Message.private.is_(False))
        .order_by(Message.seq.desc())
        .limit(1)
    )
    return (text or "")[:200]


def conversation_summary_payload(
    session: Session, settings: Settings, conversation: Conversation, *, names: dict[str, str] | None = None
) -> dict[str, Any]:
    names = names if names is not None else display_names(session, {conversation.assigned_agent_id})
    now = utcnow()
    queued_at = aware(conversation.queued_at)
    agent_id = conversation.assigned_agent_id
    return {
        "id": conversation.id,
        "status": conversation.status,
        "reason": conversation.handoff_reason,
        "reason_label": REASON_LABELS.get(conversation.handoff_reason or "", None),
        "handoff_detail": conversation.handoff_detail,
        "summary": conversation.handoff_summary,
        "priority": conversation.priority,
        "queued_at": queued_at.isoformat() if queued_at else None,
        "waiting_s": int((now - queued_at).total_seconds()) if queued_at and conversation.status == "queued" else None,
        "assigned_agent_id": agent_id,
        "agent": {"id": agent_id, "name": names.get(agent_id)} if agent_id else None,
        "contact_email": conversation.contact_email,
        "rating": conversation.rating,
        "preview": _preview(session, conversation.id),
        "customer_id": conversation.customer_id,
        "updated_at": conversation.updated_at.isoformat() if conversation.updated_at else None,
    }


def queue_entries(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Queued conversations in the order agents should take them: priority first, then the longest waiting."""
    rows = list(session.scalars(select(Conversation).where(Conversation.status == "queued").order_by(*queue_order())))
    out = []
    for position, conversation in enumerate(rows, start=1):
        item = conversation_summary_payload(session, settings, conversation, names={})
        item["position"] = position
        out.append(item)
    return out


def list_conversations(
    session: Session, settings: Settings, *, status: str | None = None, agent_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
    query = select(Conversation)
    if status is not None:
        query = query.where(Conversation.status == status)
    if agent_id is not None:
        query = query.where(Conversation.assigned_agent_id == agent_id)
    rows = list(session.scalars(query.order_by(Conversation.updated_at.desc()).limit(max(1, min(limit, 500)))))
    names = display_names(session, {c.assigned_agent_id for c in rows})
    return [conversation_summary_payload(session, settings, c, names=names) for c in rows]


def conversation_detail(session: Session, settings: Settings, conversation_id: str) -> dict[str, Any]:
    """Everything an agent needs: transcript with notes, the sources the bot used, reason and summary."""
    conversation = get_conversation(session, conversation_id)
    rows = list(
        session.scalars(select(Message).where(Message.conversation_id == conversation_id).order_by(Message.seq))
    )
    people = {m.author_id for m in rows} | {conversation.assigned_agent_id, conversation.resolved_by}
    names = display_names(session, people)
    sources: dict[str, dict[str, Any]] = {}
    for m in rows:
        if m.role == "bot":
            for c in m.citations or []:
                key = c.get("chunk_id") or c.get("entry_id") or c.get("title") or str(len(sources))
                sources.setdefault(key, {k: v for k, v in c.items() if k != "n"})
    data = conversation_summary_payload(session, settings, conversation, names=names)
    data.update(
        {
            "handoff_reason": conversation.handoff_reason,
            "handoff_summary": conversation.handoff_summary,
            "bot_summary": conversation.summary,
            "messages": [message_payload(m, author=names.get(m.author_id)) for m in rows],
            "sources": list(sources.values()),
            "resolved_at": conversation.resolved_at.isoformat() if conversation.resolved_at else None,
            "resolved_by": names.get(conversation.resolved_by) if conversation.resolved_by else None,
            "rating_comment": conversation.rating_comment,
            "created_at": conversation.created_at.isoformat() if conversation.created_at else None,
        }
    )
    if conversation.status == "queued":
        data["position"] = queue_position(session, conversation)
    return data


def agent_list(session: Session, settings: Settings, *, online_only: bool = False) -> list[dict[str, Any]]:
    """Agents (and admins) with presence and load, online first: the transfer list."""
    users = list(
        session.scalars(
            select(User).where(User.active.is_(True), User.role.in_(AGENT_ROLES)).order_by(User.username)
        )
    )
    now = utcnow()
    out = []
    for user in users:
        presence = effective_presence(user, settings, now)
        if online_only and presence != "online":
            continue
        out.append(
            {
                "id": user.id,
                "username": user.username,
                "display_name": display_name(user),
                "role": user.role,
                "presence": presence,
                "load": load_of(session, user.id),
                "capacity": user.capacity,
            }
        )
    order = {"online": 0, "away": 1, "offline": 2}
    out.sort(key=lambda a: order[a["presence"]])
    return out
