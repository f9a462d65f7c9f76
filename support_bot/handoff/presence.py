"""Agents as the queue sees them: presence (online, away, offline, with a timeout), how many chats each holds, their
names, and who may work on conversations at all.

Setting presence is `queue.set_presence`: a change re-estimates every waiting customer's wait, which needs the queue.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from support_bot.core.config import Settings
from support_bot.core.errors import Forbidden
from support_bot.models import Conversation, User, utcnow

PRESENCE = ("online", "away", "offline")
AGENT_ROLES = ("agent", "admin")

# An online agent's last-seen time is written at most this often by ordinary console requests.
_PRESENCE_TOUCH = timedelta(seconds=60)


def aware(moment: datetime | None) -> datetime | None:
    """The moment as a timezone-aware UTC datetime."""
    # SQLite returns naive datetimes for timezone-aware columns; they were written in UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


def effective_presence(user: User, settings: Settings, now: datetime | None = None) -> str:
    """online/away as set, unless the agent has not been seen within presence_timeout_s (then offline)."""
    if not user.active or user.presence not in ("online", "away"):
        return "offline"
    seen = aware(user.presence_at)
    now = now or utcnow()
    if seen is None or now - seen > timedelta(seconds=settings.handoff.presence_timeout_s):
        return "offline"
    return user.presence


def _online_filter(settings: Settings, now: datetime):
    return and_(
        User.active.is_(True),
        User.role.in_(AGENT_ROLES),
        User.presence == "online",
        User.presence_at >= now - timedelta(seconds=settings.handoff.presence_timeout_s),
    )


def agents_online(session: Session, settings: Settings) -> int:
    return session.scalar(select(func.count()).select_from(User).where(_online_filter(settings, utcnow()))) or 0


def load_of(session: Session, agent_id: str) -> int:
    """Conversations the agent holds now."""
    return session.scalar(
        select(func.count())
        .select_from(Conversation)
        .where(Conversation.assigned_agent_id == agent_id, Conversation.status == "assigned")
    ) or 0


def touch_presence(agent: User, settings: Settings) -> None:
    """Refresh an online or away agent's last-seen time (at most once a minute), so an open console keeps them on."""
    now = utcnow()
    seen = aware(agent.presence_at)
    if agent.presence in ("online", "away") and (seen is None or now - seen >= _PRESENCE_TOUCH):
        agent.presence_at = now


def display_name(user: User | None) -> str | None:
    return (user.display_name or user.username) if user is not None else None


def check_agent(agent: User) -> None:
    """Forbidden unless the user is an active agent or admin."""
    if not agent.active or agent.role not in AGENT_ROLES:
        raise Forbidden("only active agents and admins can work on conversations")


def display_names(session: Session, ids: set[str | None]) -> dict[str, str]:
    """Display names by user id (ids that are None are skipped)."""
    ids = {i for i in ids if i}
    if not ids:
        return {}
    return {u.id: display_name(u) for u in session.scalars(select(User).where(User.id.in_(ids)))}
