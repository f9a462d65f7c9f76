"""learning loop suggestions and settings changed in the console

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "faq_suggestions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=32), nullable=True),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("occurrences", sa.Integer(), server_default="1", nullable=False),
        sa.Column("merged_into_id", sa.String(length=32), nullable=True),
        sa.Column("examples", sa.JSON(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("reviewed_by", sa.String(length=32), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["reviewed_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("faq_suggestions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_faq_suggestions_conversation_id"), ["conversation_id"], unique=True)
        batch_op.create_index(batch_op.f("ix_faq_suggestions_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_faq_suggestions_merged_into_id"), ["merged_into_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_faq_suggestions_created_at"), ["created_at"], unique=False)

    op.create_table(
        "runtime_settings",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["updated_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("runtime_settings")
    with op.batch_alter_table("faq_suggestions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_faq_suggestions_created_at"))
        batch_op.drop_index(batch_op.f("ix_faq_suggestions_merged_into_id"))
        batch_op.drop_index(batch_op.f("ix_faq_suggestions_status"))
        batch_op.drop_index(batch_op.f("ix_faq_suggestions_conversation_id"))
    op.drop_table("faq_suggestions")
