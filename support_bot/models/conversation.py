"""Customers, their conversations and messages, feedback on answers, and agents' canned replies."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from support_bot.models.base import Base, UtcDateTime, new_id, utcnow


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # The host site's own id for an identified customer (HMAC-verified); null for anonymous visitors.
    external_id: Mapped[str | None] = mapped_column(String(255), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    # SHA-256 of the bearer token; the token itself is only ever shown to the customer once.
    token_hash: Mapped[str] = mapped_column(String(64))
    # bot -> queued -> assigned -> resolved (or back to bot)
    status: Mapped[str] = mapped_column(String(16), default="bot", index=True)
    # Model-written rolling summary of the conversation up to message seq `summary_upto_seq`.
    summary: Mapped[str | None] = mapped_column(Text)
    summary_upto_seq: Mapped[int | None] = mapped_column(Integer)
    # Handoff: why the chat went to a person (request, button, abstain, sentiment, safety, max_turns, offline), the
    # trigger's own words or score, and a model-written note for the agent, all set when it is queued.
    handoff_reason: Mapped[str | None] = mapped_column(String(32))
    handoff_detail: Mapped[str | None] = mapped_column(Text)
    handoff_summary: Mapped[str | None] = mapped_column(Text)
    # Higher first, then the longest waiting.
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    # Users are disabled, never deleted: the database refuses to delete one who handled conversations.
    assigned_agent_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolved_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    rating: Mapped[int | None] = mapped_column(Integer)  # 1..5, given by the customer after a resolution
    rating_comment: Mapped[str | None] = mapped_column(Text)
    # Set when the customer left a message for later (no agent online): an offline ticket.
    contact_email: Mapped[str | None] = mapped_column(String(320))
    # Bot replies, and abstentions in a row, since the bot last took (or took back) the chat.
    bot_turns: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    abstain_streak: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    messages: Mapped[list["Message"]] = relationship(
        back_populates="conversation", order_by="Message.seq", cascade="all, delete-orphan"
    )


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("conversation_id", "client_message_id", name="uq_message_client_id"),)

    # Monotonic order across the whole table; also the SSE event id for resumable streams.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # customer | bot | agent | system
    text: Mapped[str] = mapped_column(Text)
    client_message_id: Mapped[str | None] = mapped_column(String(64))
    # For a bot reply: the customer message it answers. Unique: a question is answered once, even when two requests
    # (a re-post racing its original) both try.
    reply_to_id: Mapped[str | None] = mapped_column(String(32), unique=True, index=True)
    # [{"n": 1, "chunk_id": .., "source": .., "entry_id": .., "title": .., "url": ..}]
    citations: Mapped[list] = mapped_column(JSON, default=list)
    abstained: Mapped[bool] = mapped_column(Boolean, default=False)
    # For a reply that declined: the help-center questions offered instead, [{"question", "source", "entry_id", "url"}].
    related: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # An agent's internal note: shown in the console only, never to the customer or the model.
    private: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # The console user who wrote an agent message or note.
    author_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="messages")


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("message_id", name="uq_feedback_message"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    rating: Mapped[str] = mapped_column(String(8))  # up | down
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class CannedResponse(Base):
    """A saved reply agents insert instead of typing it again."""

    __tablename__ = "canned_responses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # A short unique name agents pick it by (e.g. "refund-status").
    title: Mapped[str] = mapped_column(String(255), unique=True)
    text: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
