"""Work queue: claims on scheduled commands, and transitions ordered by recording time.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scheduled_command") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(200), nullable=True))
        batch.add_column(sa.Column("claim_expires_at", UtcDateTime(), nullable=True))
    op.create_index("ix_transition_recorded_at", "transition", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_transition_recorded_at", "transition")
    with op.batch_alter_table("scheduled_command") as batch:
        batch.drop_column("claim_expires_at")
        batch.drop_column("claimed_by")
