"""Backend profiles: the named backend (`backends: [{name: laptop, ...}]`) that drives an entity.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-02

NULL for every existing entity: it keeps its lifecycle's default route, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("entity") as batch:
        batch.add_column(sa.Column("profile", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("entity") as batch:
        batch.drop_column("profile")
