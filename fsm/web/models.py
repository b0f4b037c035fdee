"""The HTTP API's response and request bodies (pydantic), which its OpenAPI documents.

Every value that came from entity data, a payload or a command's arguments has passed the
redaction policy before it is put in one of these.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from fsm.redaction import redact, redact_text
from storage.records import EntityRow, ReleaseRow, ScheduledCommandRow, TransitionRow


class StateInfo(BaseModel):
    name: str
    initial: bool
    terminal: bool
    time_limit: float | None = None
    on_time_limit: str | None = None


class LifecycleInfo(BaseModel):
    name: str
    version: str
    initial: str
    states: list[StateInfo]
    triggers: list[str]
    versions: list[str] = Field(description="definition versions stored in this database")


class Definition(BaseModel):
    name: str
    version: str
    body: dict[str, Any]


class Move(BaseModel):
    event: str
    from_state: str
    to_state: str
    times: int


class LifecycleOverview(BaseModel):
    name: str
    version: str
    total: int
    counts: dict[str, int]
    moves: list[Move]
    failing_observations: int
    overdue_deadlines: int
    lagging_refreshes: int


class Overview(BaseModel):
    window: str
    since: datetime | None
    now: datetime
    lifecycles: list[LifecycleOverview]
    leases: dict[str, int] = Field(description="entities leased per worker now")
    releases_pending: int = Field(description="ended entities whose release is unconfirmed")


class Entity(BaseModel):
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
    lease_owner: str | None
    lease_expires_at: datetime | None
    observation_failures: int
    data: dict[str, Any]
    parent_id: str | None
    profile: str | None = None
    last_observed_at: datetime | None = Field(
        default=None, description="the last observation that succeeded"
    )

    @classmethod
    def of(cls, row: EntityRow) -> Entity:
        fields = row._asdict()
        fields["data"] = redact(row.data)
        fields["profile"] = getattr(row, "profile", None)  # the schema may not have it yet
        return cls(**fields)


class EntityPage(BaseModel):
    entities: list[Entity]
    next_cursor: str | None = Field(description="pass as `after` for the next page")
    matching: int = Field(description="entities matching the filters (counted up to a cap)")
    more_than: bool = Field(description="true when more than `matching` entities match")


class Transition(BaseModel):
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

    @classmethod
    def of(cls, row: TransitionRow) -> Transition:
        fields = row._asdict()
        fields["payload"] = redact(row.payload)
        fields["source"] = redact_text(row.source)
        return cls(**fields)


class History(BaseModel):
    entity: Entity
    transitions: list[Transition]


class ScheduledCommand(BaseModel):
    id: int
    command: str
    arguments: dict[str, Any]
    due_at: datetime
    created_at: datetime
    done_at: datetime | None
    outcome: str | None
    claimed_by: str | None

    @classmethod
    def of(cls, row: ScheduledCommandRow) -> ScheduledCommand:
        return cls(
            id=row.id,
            command=row.command,
            arguments=redact(row.arguments),
            due_at=row.due_at,
            created_at=row.created_at,
            done_at=row.done_at,
            outcome=None if row.outcome is None else redact_text(row.outcome),
            claimed_by=row.claimed_by,
        )


class Release(BaseModel):
    """What an ended entity still held, until its backend confirmed it is gone."""

    state: str
    requested_at: datetime
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    released_at: datetime | None

    @classmethod
    def of(cls, row: ReleaseRow) -> Release:
        return cls(
            state=row.state,
            requested_at=row.requested_at,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_error=None if row.last_error is None else redact_text(row.last_error),
            released_at=row.released_at,
        )


class Violation(BaseModel):
    kind: str
    detail: str


class Verification(BaseModel):
    entity_id: str
    ok: bool
    violations: list[Violation]


class EntityDetail(BaseModel):
    entity: Entity
    parent: Entity | None
    children: list[Entity]
    pending_commands: list[ScheduledCommand]
    release: Release | None = Field(description="the release obligation, once it ended")
    verification: Verification


class Problem(BaseModel):
    detail: str


# -- write bodies ----------------------------------------------------------------------------


class CreateBody(BaseModel):
    lifecycle: str = Field(max_length=200)
    id: str | None = Field(default=None, max_length=200)
    data: dict[str, Any] = Field(default_factory=dict)
    parent_id: str | None = Field(default=None, max_length=200)
    profile: str | None = Field(default=None, max_length=100, description="backend profile")


class CommandBody(BaseModel):
    command: str = Field(max_length=200)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ScheduleBody(CommandBody):
    delay: float = Field(default=0.0, ge=0, le=10 * 365 * 86400.0)


class Scheduled(BaseModel):
    id: int
    entity_id: str
    due_at: datetime


class Outcome(BaseModel):
    entity: Entity
    transitions: list[Transition]


class Cancelled(BaseModel):
    id: int
    cancelled: bool
