"""Plain records passed between the engine and the store (the store knows no lifecycle rules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True, frozen=True)
class EntityRow:
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
    data: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None


@dataclass(slots=True, frozen=True)
class TransitionRow:
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


@dataclass(slots=True, frozen=True)
class EntityUpdate:
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


@dataclass(slots=True, frozen=True)
class StateCount:
    """How many entities of a lifecycle are in a state."""

    lifecycle: str
    state: str
    count: int
