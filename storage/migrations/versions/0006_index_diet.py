"""Index diet: fewer index entries to move per transition, every product query still indexed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Each transition moved the entity's entries in seven indexes and appended to three history
indexes. Now:
- one covering `ix_entity_states` (lifecycle, state, id, terminal, observation_failures,
  deadline_at, next_refresh_at) replaces (lifecycle, state), (lifecycle, state, id) and the
  overview's `ix_entity_attention`: keyset pages by state and the overview read it alone;
- a narrow `ix_entity_counts` (lifecycle, state, terminal) serves the counts: PostgreSQL
  deduplicates its entries (7 MB at 1M rows against 118 MB for the covering index, which its
  planner would rather not read whole than scan the 122 MB table);
- the mostly-NULL columns (next refresh: NULL once terminal; deadline; lease; parent; profile)
  are indexed only where they are set, and the queues only where work is pending;
- one `ix_transition_recorded` (recorded_at, entity_id, seq, and the move) replaces the two
  recorded_at indexes: the window counts, the tally and the recorded-order cursor read it alone.
The history key (entity_id, seq) stays: history by entity in order, verify and replay use it.
Only indexes change, so the data stays where it is, both ways.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (name, table, columns, partial WHERE or None)
Spec = tuple[str, str, list[str], str | None]

OLD: tuple[Spec, ...] = (
    ("ix_entity_lifecycle_state", "entity", ["lifecycle", "state"], None),
    ("ix_entity_lifecycle_state_id", "entity", ["lifecycle", "state", "id"], None),
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
        None,
    ),
    ("ix_entity_next_refresh_at", "entity", ["next_refresh_at"], None),
    ("ix_entity_deadline_at", "entity", ["deadline_at"], None),
    ("ix_entity_lease_owner", "entity", ["lease_owner"], None),
    ("ix_entity_parent_id", "entity", ["parent_id"], None),
    ("ix_transition_recorded_at", "transition", ["recorded_at"], None),
    (
        "ix_transition_moves",
        "transition",
        ["recorded_at", "definition_version", "event", "from_state", "to_state"],
        None,
    ),
    (
        "ix_release_obligation_next_attempt_at",
        "release_obligation",
        ["next_attempt_at"],
        None,
    ),
)

NEW: tuple[Spec, ...] = (
    (
        "ix_entity_states",
        "entity",
        [
            "lifecycle",
            "state",
            "id",
            "terminal",
            "observation_failures",
            "deadline_at",
            "next_refresh_at",
        ],
        None,
    ),
    ("ix_entity_counts", "entity", ["lifecycle", "state", "terminal"], None),
    (
        "ix_entity_next_refresh_at",
        "entity",
        ["next_refresh_at"],
        "next_refresh_at IS NOT NULL",
    ),
    ("ix_entity_deadline_at", "entity", ["deadline_at"], "deadline_at IS NOT NULL"),
    ("ix_entity_lease_owner", "entity", ["lease_owner"], "lease_owner IS NOT NULL"),
    ("ix_entity_parent_id", "entity", ["parent_id"], "parent_id IS NOT NULL"),
    (
        "ix_entity_profile",
        "entity",
        ["profile", "lifecycle", "terminal"],
        "profile IS NOT NULL",
    ),
    (
        "ix_transition_recorded",
        "transition",
        [
            "recorded_at",
            "entity_id",
            "seq",
            "definition_version",
            "event",
            "from_state",
            "to_state",
        ],
        None,
    ),
    (
        "ix_scheduled_command_pending",
        "scheduled_command",
        ["due_at", "id"],
        "done_at IS NULL",
    ),
    (
        "ix_release_obligation_pending",
        "release_obligation",
        ["next_attempt_at", "entity_id"],
        "released_at IS NULL",
    ),
)


def _create(specs: tuple[Spec, ...]) -> None:
    for name, table, columns, where in specs:
        partial: dict[str, Any] = {}
        if where is not None:  # the same predicate on both databases
            partial = {"sqlite_where": sa.text(where), "postgresql_where": sa.text(where)}
        op.create_index(name, table, columns, **partial)


def _drop(specs: tuple[Spec, ...]) -> None:
    for name, table, _columns, _where in reversed(specs):
        op.drop_index(name, table)


def upgrade() -> None:
    _drop(OLD)
    _create(NEW)


def downgrade() -> None:
    _drop(NEW)
    _create(OLD)
