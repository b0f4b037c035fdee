"""What callers hand the engine (events, new entities) and what they get back (outcomes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from storage.records import TransitionRow


class Event(NamedTuple):
    """Something that happened to an entity: a backend observation, a command, a timer.

    `data` is merged into the entity's data when the event is applied (e.g. a job id);
    `expected_version`, when given, makes the write conditional on the entity being at it.
    """

    entity_id: str
    name: str
    payload: Mapping[str, Any] | None = None
    source: str = "user"
    observed_at: datetime | None = None
    expected_version: int | None = None
    data: Mapping[str, Any] | None = None


class NewEntity(NamedTuple):
    """An entity to create in its lifecycle's initial state."""

    lifecycle: str
    data: Mapping[str, Any] | None = None
    id: str | None = None
    parent_id: str | None = None
    profile: str | None = None  # a backend profile of the run config (`backends: [{name: ...}]`)


class GuardsHeld(NamedTuple):
    """The event is allowed in the entity's state, but these guards were false: nothing moved."""

    guards: tuple[str, ...]


class Outcome(NamedTuple):
    """What one event did: the transition it recorded (None if the state was kept) or its error.

    `held` names the guards that were false when the event was allowed but no transition's
    guards held (`not NAME` for an `unless` that was true): the state was kept, visibly.
    """

    event: Event
    state: str | None = None
    version: int | None = None
    transition: TransitionRow | None = None
    error: Exception | None = None
    held: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def changed(self) -> bool:
        return self.transition is not None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Per-event outcomes of one batch, in the order the events were given."""

    outcomes: tuple[Outcome, ...]

    @property
    def transitions(self) -> list[TransitionRow]:
        return [o.transition for o in self.outcomes if o.transition is not None]

    @property
    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    def __len__(self) -> int:
        return len(self.outcomes)
