"""Plain records passed between the engine and the store (the store knows no lifecycle rules).

Named tuples, not dataclasses: immutable, typed, and several times cheaper to build, which
matters on a path that creates one per event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple


class EntityRow(NamedTuple):
    """An entity as stored."""

    id: str
    lifecycle: str
    definition_version: str
    state: str
    terminal: bool
    version: int
    seq: int
    state_entered_at: datetime
    deadline_at: datetime | None
    next_refresh_at: datetime | None
    created_at: datetime
    updated_at: datetime
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    observation_failures: int = 0
    data: dict[str, Any] = {}
    parent_id: str | None = None
    last_observed_at: datetime | None = None
    profile: str | None = None  # the named backend that drives it; None: the lifecycle's default


class TransitionRow(NamedTuple):
    """One recorded transition."""

    entity_id: str
    seq: int
    from_state: str
    to_state: str
    event: str
    source: str
    payload: dict[str, Any]
    observed_at: datetime
    recorded_at: datetime
    definition_version: str


class EntityUpdate(NamedTuple):
    """The new head of an entity, written only if it is still at `expected_version`."""

    id: str
    expected_version: int
    state: str
    terminal: bool
    version: int
    seq: int
    state_entered_at: datetime
    deadline_at: datetime | None
    next_refresh_at: datetime | None
    updated_at: datetime
    definition_version: str
    data: dict[str, Any] | None = None  # None: leave the stored data as it is


class StateCount(NamedTuple):
    """How many entities of a lifecycle are in a state."""

    lifecycle: str
    state: str
    total: int


class ScheduledCommandRow(NamedTuple):
    """A command due at a time; `done_at` is set exactly once, when its effect is recorded."""

    id: int
    entity_id: str
    command: str
    arguments: dict[str, Any]
    due_at: datetime
    created_at: datetime
    done_at: datetime | None
    outcome: str | None
    claimed_by: str | None
    claim_expires_at: datetime | None


class RefreshMark(NamedTuple):
    """When to look at an entity next, how many observations of it failed in a row, and when
    the one that just succeeded was made (None: it failed, keep the last success)."""

    id: str
    next_refresh_at: datetime | None
    observation_failures: int
    observed_at: datetime | None = None


class Claim(NamedTuple):
    """An entity leased to one worker; `previous_owner` is set when an expired lease was taken."""

    entity: EntityRow
    previous_owner: str | None
    #: the row as the driver returned it after the lease (SQLite): a re-read equal to it
    #: reuses `entity` instead of converting the row again (`queue.reread_claims`)
    raw: tuple[Any, ...] | None = None


class ReleaseRow(NamedTuple):
    """A release obligation: pending while `released_at` is None."""

    entity_id: str
    state: str
    requested_at: datetime
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    released_at: datetime | None
    claimed_by: str | None
    claim_expires_at: datetime | None
