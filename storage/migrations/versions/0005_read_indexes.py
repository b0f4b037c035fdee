"""Read indexes for `fsm serve`: keyset pages of entities in every sort order, the overview's
counts, and the moves fired in a time window, answered from indexes alone.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# (name, table, columns): each entity sort order ends in the id, the tie-breaker of its keyset
INDEXES: tuple[tuple[str, str, list[str]], ...] = (
    ("ix_entity_updated_at_id", "entity", ["updated_at", "id"]),
    ("ix_entity_created_at_id", "entity", ["created_at", "id"]),
    ("ix_entity_state_entered_at_id", "entity", ["state_entered_at", "id"]),
    ("ix_entity_lifecycle_state_id", "entity", ["lifecycle", "state", "id"]),
    ("ix_entity_lease_owner", "entity", ["lease_owner"]),
    (
        "ix_entity_attention",
        "entity",
        [
            "lifecycle",
            "state",
            "terminal",
            "observation_failures",
            "deadline_at",
            "next_refresh_at",
        ],
    ),
    (
        "ix_transition_moves",
        "transition",
        ["recorded_at", "definition_version", "event", "from_state", "to_state"],
    ),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table)
