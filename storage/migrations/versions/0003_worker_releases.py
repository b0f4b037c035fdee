"""Worker: durable release obligations, and when each entity was last observed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ALTER TABLE on both databases (SQLite >= 3.35 drops columns too): a batch
    # rebuild of `entity` would trip over the foreign keys that point at it
    op.add_column("entity", sa.Column("last_observed_at", UtcDateTime(), nullable=True))
    op.create_table(
        "release_obligation",
        sa.Column("entity_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(200), nullable=False),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("last_error", sa.String(2000), nullable=True),
        sa.Column("released_at", UtcDateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("claim_expires_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["entity_id"], ["entity.id"]),
        sa.PrimaryKeyConstraint("entity_id"),
    )
    op.create_index(
        "ix_release_obligation_next_attempt_at", "release_obligation", ["next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_release_obligation_next_attempt_at", "release_obligation")
    op.drop_table("release_obligation")
    op.drop_column("entity", "last_observed_at")
