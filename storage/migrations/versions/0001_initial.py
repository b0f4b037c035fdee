"""Initial schema: definitions, entities, transitions, scheduled commands.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lifecycle_definition",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version"),
    )
    op.create_table(
        "entity",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("lifecycle", sa.String(200), nullable=False),
        sa.Column("definition_version", sa.String(64), nullable=False),
        sa.Column("state", sa.String(200), nullable=False),
        sa.Column("terminal", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("state_entered_at", UtcDateTime(), nullable=False),
        sa.Column("deadline_at", UtcDateTime(), nullable=True),
        sa.Column("next_refresh_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", UtcDateTime(), nullable=True),
        sa.Column("observation_failures", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("parent_id", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(["parent_id"], ["entity.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_entity_lifecycle_state", "entity", ["lifecycle", "state"])
    op.create_index("ix_entity_next_refresh_at", "entity", ["next_refresh_at"])
    op.create_index("ix_entity_deadline_at", "entity", ["deadline_at"])
    op.create_index("ix_entity_parent_id", "entity", ["parent_id"])
    op.create_table(
        "transition",
        sa.Column("entity_id", sa.String(200), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("from_state", sa.String(200), nullable=False),
        sa.Column("to_state", sa.String(200), nullable=False),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("observed_at", UtcDateTime(), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.Column("definition_version", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["entity_id"], ["entity.id"]),
        sa.PrimaryKeyConstraint("entity_id", "seq"),
    )
    op.create_table(
        "scheduled_command",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entity_id", sa.String(200), nullable=False),
        sa.Column("command", sa.String(200), nullable=False),
        sa.Column("arguments", sa.JSON(), nullable=False),
        sa.Column("due_at", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("done_at", UtcDateTime(), nullable=True),
        sa.Column("outcome", sa.String(2000), nullable=True),
        sa.ForeignKeyConstraint(["entity_id"], ["entity.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_scheduled_command_entity_id", "scheduled_command", ["entity_id"])
    op.create_index("ix_scheduled_command_due_at", "scheduled_command", ["due_at"])


def downgrade() -> None:
    op.drop_table("scheduled_command")
    op.drop_table("transition")
    op.drop_index("ix_entity_parent_id", "entity")
    op.drop_index("ix_entity_deadline_at", "entity")
    op.drop_index("ix_entity_next_refresh_at", "entity")
    op.drop_index("ix_entity_lifecycle_state", "entity")
    op.drop_table("entity")
    op.drop_table("lifecycle_definition")
