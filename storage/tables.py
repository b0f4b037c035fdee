"""The schema, as SQLModel tables. Only `storage.store` writes to them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, PrimaryKeyConstraint, text
from sqlmodel import Field, SQLModel

from storage.types import UtcDateTime


def _time(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column_kwargs={},
        sa_type=UtcDateTime,
        nullable=nullable,
        index=index,
    )


def _where(condition: str) -> dict[str, Any]:
    """A partial index's predicate, the same on both databases (migration 0006)."""
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


def _partial(name: str, *columns: str) -> Index:
    """An index of a mostly-NULL column: only the rows where it is set have an entry."""
    return Index(name, *columns, **_where(f"{columns[0]} IS NOT NULL"))


class LifecycleDefinitionTable(SQLModel, table=True):
    """Every definition version that ever produced a transition, so `verify` can replay old rows."""

    __tablename__ = "lifecycle_definition"

    name: str = Field(primary_key=True, max_length=200)
    version: str = Field(primary_key=True, max_length=64)
    body: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = _time()


class EntityTable(SQLModel, table=True):
    """One host, service or operation: its current state and what drives it."""

    __tablename__ = "entity"
    __table_args__ = (
        # migration 0006: counts, pages by state and the overview, from this index alone
        Index(
            "ix_entity_states",
            "lifecycle",
            "state",
            "id",
            "terminal",
            "observation_failures",
            "deadline_at",
            "next_refresh_at",
        ),
        # migration 0006: the counts by lifecycle and state; narrow so that PostgreSQL's B-tree
        # deduplication keeps it a few MB at 1M rows (the covering index, one entry per id, is
        # as large as the table there, and its planner reads the heap instead)
        Index("ix_entity_counts", "lifecycle", "state", "terminal"),
        _partial("ix_entity_next_refresh_at", "next_refresh_at"),
        _partial("ix_entity_deadline_at", "deadline_at"),
        _partial("ix_entity_lease_owner", "lease_owner"),
        _partial("ix_entity_parent_id", "parent_id"),
        _partial("ix_entity_profile", "profile", "lifecycle", "terminal"),
        # migration 0005: the web view's keyset pages in every sort order
        Index("ix_entity_updated_at_id", "updated_at", "id"),
        Index("ix_entity_created_at_id", "created_at", "id"),
        Index("ix_entity_state_entered_at_id", "state_entered_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=200)
    lifecycle: str = Field(max_length=200)
    definition_version: str = Field(max_length=64)
    state: str = Field(max_length=200)
    terminal: bool = Field(default=False)
    version: int = Field(default=1)
    seq: int = Field(default=0)
    state_entered_at: datetime = _time()
    deadline_at: datetime | None = _time(nullable=True)
    next_refresh_at: datetime | None = _time(nullable=True)
    created_at: datetime = _time()
    updated_at: datetime = _time()
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = _time(nullable=True)
    observation_failures: int = Field(default=0)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    parent_id: str | None = Field(default=None, foreign_key="entity.id")
    #: when an observation of it last succeeded (the deadline rule waits for one after a limit)
    last_observed_at: datetime | None = _time(nullable=True)
    profile: str | None = Field(default=None, max_length=100)


class TransitionTable(SQLModel, table=True):
    """One recorded change of state; (entity_id, seq) runs 1..n without gaps."""

    __tablename__ = "transition"
    __table_args__ = (
        PrimaryKeyConstraint("entity_id", "seq"),
        # migration 0006: recorded order, moves fired in a window and the tally, index alone
        Index(
            "ix_transition_recorded",
            "recorded_at",
            "entity_id",
            "seq",
            "definition_version",
            "event",
            "from_state",
            "to_state",
        ),
    )

    entity_id: str = Field(foreign_key="entity.id", max_length=200)
    seq: int
    from_state: str = Field(max_length=200)
    to_state: str = Field(max_length=200)
    event: str = Field(max_length=200)
    source: str = Field(max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    observed_at: datetime = _time()
    recorded_at: datetime = _time()
    definition_version: str = Field(max_length=64)


class ScheduledCommandTable(SQLModel, table=True):
    """A command due at a given time (e.g. `stop(delay=60)`), executed exactly once."""

    __tablename__ = "scheduled_command"
    __table_args__ = (
        Index("ix_scheduled_command_pending", "due_at", "id", **_where("done_at IS NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    entity_id: str = Field(foreign_key="entity.id", index=True, max_length=200)
    command: str = Field(max_length=200)
    arguments: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    due_at: datetime = _time(index=True)
    created_at: datetime = _time()
    done_at: datetime | None = _time(nullable=True)
    outcome: str | None = Field(default=None, max_length=2000)
    claimed_by: str | None = Field(default=None, max_length=200)
    claim_expires_at: datetime | None = _time(nullable=True)


class ReleaseTable(SQLModel, table=True):
    """A durable obligation to free what an ended entity still holds (a job, a process, a VM).

    Written in the transaction of the terminal transition; done only when the backend's
    `release` returned, i.e. confirmed that nothing is held any more."""

    __tablename__ = "release_obligation"
    __table_args__ = (
        Index(
            "ix_release_obligation_pending",
            "next_attempt_at",
            "entity_id",
            **_where("released_at IS NULL"),
        ),
    )

    entity_id: str = Field(primary_key=True, foreign_key="entity.id", max_length=200)
    state: str = Field(max_length=200)  # the terminal state that asked for it
    requested_at: datetime = _time()
    attempts: int = Field(default=0)
    next_attempt_at: datetime = _time()
    last_error: str | None = Field(default=None, max_length=2000)
    released_at: datetime | None = _time(nullable=True)
    claimed_by: str | None = Field(default=None, max_length=200)
    claim_expires_at: datetime | None = _time(nullable=True)


entity_table = EntityTable.__table__  # type: ignore[attr-defined]
transition_table = TransitionTable.__table__  # type: ignore[attr-defined]
definition_table = LifecycleDefinitionTable.__table__  # type: ignore[attr-defined]
scheduled_command_table = ScheduledCommandTable.__table__  # type: ignore[attr-defined]
release_table = ReleaseTable.__table__  # type: ignore[attr-defined]
