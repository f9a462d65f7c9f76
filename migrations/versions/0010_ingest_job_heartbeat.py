"""ingest jobs: when each was handed to a worker, and a running job's heartbeat

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ingest_jobs", sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("ingest_jobs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    # Left unset on jobs queued before this version: nothing recorded whether a broker took them, so the workers'
    # sweep hands each over once more (a second run of a job is harmless, a lost one is not).


def downgrade() -> None:
    with op.batch_alter_table("ingest_jobs", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("dispatched_at")
