"""Backend profiles: the named backend (`backends: [{name: laptop, ...}]`) that drives an entity.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

NULL for every existing entity: it keeps its lifecycle's default route, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ALTER TABLE on both databases (SQLite >= 3.35 drops columns too): a batch rebuild
    # of `entity` would trip over the foreign keys that point at it
    op.add_column("entity", sa.Column("profile", sa.String(100), nullable=True))


def downgrade() -> None:
    op.drop_column("entity", "profile")
