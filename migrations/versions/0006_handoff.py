"""human handoff: queue fields on conversations, private notes, canned responses

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _add_user_column(table: str, column: str) -> None:
    """A nullable column referencing users.id; users are disabled, never deleted, so no ON DELETE action."""
    if op.get_bind().dialect.name == "sqlite":
        # SQLite takes a REFERENCES clause in ADD COLUMN but no separate constraint; batch mode would copy the table.
        op.execute(f"ALTER TABLE {table} ADD COLUMN {column} VARCHAR(32) REFERENCES users (id)")
    else:
        op.add_column(table, sa.Column(column, sa.String(length=32), sa.ForeignKey("users.id"), nullable=True))


def upgrade() -> None:
    # Only ADD COLUMNs with literal defaults, so SQLite alters in place: copying the conversations table would drop
    # the old one, and that cascades to every message.
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handoff_reason", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("handoff_detail", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("handoff_summary", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("priority", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("rating", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rating_comment", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("contact_email", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("bot_turns", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("abstain_streak", sa.Integer(), server_default="0", nullable=False))
        batch_op.create_index(batch_op.f("ix_conversations_queued_at"), ["queued_at"], unique=False)
    _add_user_column("conversations", "assigned_agent_id")
    _add_user_column("conversations", "resolved_by")
    op.create_index(op.f("ix_conversations_assigned_agent_id"), "conversations", ["assigned_agent_id"], unique=False)

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("private", sa.Boolean(), server_default="0", nullable=False))
    _add_user_column("messages", "author_id")

    op.create_table(
        "canned_responses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("title"),
    )


def downgrade() -> None:
    op.drop_table("canned_responses")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("author_id")
        batch_op.drop_column("private")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversations_assigned_agent_id"))
        batch_op.drop_index(batch_op.f("ix_conversations_queued_at"))
        for name in (
            "abstain_streak", "bot_turns", "contact_email", "rating_comment", "rating", "resolved_by", "resolved_at",
            "assigned_at", "assigned_agent_id", "queued_at", "priority", "handoff_summary", "handoff_detail",
            "handoff_reason",
        ):
            batch_op.drop_column(name)
