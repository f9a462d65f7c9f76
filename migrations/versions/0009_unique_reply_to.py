"""a customer message has at most one bot reply (unique messages.reply_to_id)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Earlier versions could answer one question twice (a re-post racing its original). The first reply stays the
    # answer; later ones stay in the conversation as bot messages, no longer linked to the question, so nothing a
    # customer was shown is lost.
    op.execute(
        sa.text(
            "UPDATE messages SET reply_to_id = NULL WHERE reply_to_id IS NOT NULL AND seq > "
            "(SELECT MIN(earlier.seq) FROM messages AS earlier WHERE earlier.reply_to_id = messages.reply_to_id)"
        )
    )
    op.drop_index("ix_messages_reply_to_id", table_name="messages")
    op.create_index("ix_messages_reply_to_id", "messages", ["reply_to_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_messages_reply_to_id", table_name="messages")
    op.create_index("ix_messages_reply_to_id", "messages", ["reply_to_id"], unique=False)
