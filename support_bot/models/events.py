"""Records of what happened: safety events, the audit log, and the conversation event feed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from support_bot.models.base import Base, UtcDateTime, utcnow


class SafetyEvent(Base):
    """A guard verdict that changed what the customer got (blocked, cautioned, handed off, replaced)."""

    __tablename__ = "safety_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[str | None] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(8))  # input | output
    category: Mapped[str] = mapped_column(String(40), index=True)
    action: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float, default=0.0)
    reason: Mapped[str] = mapped_column(Text, default="")
    # A short, PII-redacted excerpt of the offending text, for the console.
    excerpt: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class AuditLog(Base):
    """Who did what and when: claims, transfers, replies, resolutions, user and role changes, settings."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Null for the system itself (automatic handoffs, setup).
    actor_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # Kept as written at the time, so the log stays readable after a user is renamed or disabled.
    actor_name: Mapped[str] = mapped_column(String(255), default="system")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32), default="")
    target_id: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class ConversationEvent(Base):
    """Something that happened in a conversation, kept so live streams can replay what a client missed."""

    __tablename__ = "conversation_events"
    # Without AUTOINCREMENT SQLite may hand a deleted top seq out again, and a resuming stream would skip it.
    __table_args__ = {"sqlite_autoincrement": True}

    # Monotonic across all conversations: the SSE event id, so one console stream can resume over every chat.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # message | status | queue | note | ...
    audience: Mapped[str] = mapped_column(String(16), default="all")  # all | console
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    # Indexed: live streams re-read recent events to catch transactions that committed out of seq order.
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
