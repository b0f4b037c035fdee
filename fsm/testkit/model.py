"""What the kit expects of an entity: the model of its head and history, and the documented
rules (deadlines, redaction) that model follows."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from fsm.definition import MAX_SECONDS
from fsm.engine import Engine
from fsm.lifecycle import Lifecycle
from storage import EntityRow, TransitionRow

EntityInvariant = Callable[[Engine, EntityRow], None]
"""A check of your own, run on every entity after every step; raise (or assert) to fail."""

CANARY = "CANARY-SECRET-"
"""Prefix of the values the kit sends under secret-looking payload keys; never seen in history."""

SECRET_KEYS = (
    "password",
    "api_key",
    "accessToken",
    "client-secret",
    "sshKey",
    "token",
    "db_password",
    "Authorization",
)
"""Payload keys the redaction rules call secret; the kit puts canary values under them."""

PLAIN_KEYS = ("job_id", "exit_code", "message", "node", "attempt", "details")
UNKNOWN_TRIGGER = "no_such_event"
UNKNOWN_ENTITY = "no-such-entity"
HEAD_FIELDS = (
    "id",
    "lifecycle",
    "definition_version",
    "state",
    "terminal",
    "version",
    "seq",
    "state_entered_at",
    "deadline_at",
    "created_at",
    "data",
)
START = datetime.fromisoformat("2026-01-01T00:00:00+00:00")


class InvariantViolation(AssertionError):
    """The engine or the database broke a rule the kit checks."""


def fail(message: str) -> InvariantViolation:
    return InvariantViolation(message)


# -- static checks ------------------------------------------------------------------------------


@dataclass(slots=True)
class Model:
    """What the kit expects one entity (head and history) to be."""

    id: str
    lifecycle: str
    definition_version: str
    state: str
    terminal: bool
    version: int
    entered_at: datetime
    deadline_at: datetime | None
    created_at: datetime
    data: dict[str, Any]
    history: list[TransitionRow] = field(default_factory=list)

    @property
    def seq(self) -> int:
        return len(self.history)


class Guess(NamedTuple):
    """The predicted effect of one event: its kind, the model afterwards, and details."""

    kind: str  # "conflict" | "invalid" | "hook" | "kept" | "moved" | "missing"
    after: Model | None = None
    hook: str | None = None  # the guard that raised (kind "hook")
    hook_error: type[BaseException] | None = None


class PlannedEvent(NamedTuple):
    """One event of a random batch, as the state machine draws it."""

    entity: int  # index into the entities created so far; -1: an id that does not exist
    event: str
    payload: dict[str, Any] | None = None
    version: str = "none"  # "none" | "current" | "stale"
    data: dict[str, Any] | None = None


def expected_deadline(
    lifecycle: Lifecycle, state: str, entered: datetime, data: Mapping[str, Any]
) -> datetime | None:
    """The documented rule: a state with a time limit has a deadline, its limit replaced by a
    positive `data["time_limits"][state]` of at most ten years; a state without a limit has
    none, whatever the data says (it would have no event to fire)."""
    limit = lifecycle.states[state].time_limit
    if limit is None:
        return None
    overrides = data.get("time_limits")
    if isinstance(overrides, Mapping):
        custom = overrides.get(state)
        if (
            isinstance(custom, (int, float))
            and not isinstance(custom, bool)
            and 0 < custom <= MAX_SECONDS
        ):
            limit = float(custom)
    return entered + timedelta(seconds=limit)


def has_canary(value: Any) -> bool:
    """Whether a canary secret value occurs anywhere in `value`."""
    return CANARY in json.dumps(value, default=str)
