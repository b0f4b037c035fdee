"""What guards and callbacks see: a read-only view of the entity and the event being applied."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class EventContext:
    """The entity as it was before the event, and the event itself."""

    entity_id: str
    lifecycle: str
    state: str
    data: Mapping[str, Any]
    state_entered_at: datetime
    deadline_at: datetime | None
    event: str
    payload: Mapping[str, Any]
    observed_at: datetime


Guard = Callable[[EventContext], bool]
"""A named condition on a transition. Must be pure: it may run more than once per event."""

Callback = Callable[[EventContext, str], None]
"""Runs after a transition is chosen and before it is committed; raising cancels it."""


def time_limit_exceeded(ctx: EventContext) -> bool:
    """True once the current state's deadline has passed at the event's observation time."""
    return ctx.deadline_at is not None and ctx.observed_at >= ctx.deadline_at


def current_operation(ctx: EventContext) -> bool:
    """The event's `operation` is the one the entity's current command recorded in its data
    (a late result of an older operation must not move a host)."""
    operation = ctx.payload.get("operation")
    return operation is not None and operation == ctx.data.get("operation")


BUILTIN_GUARDS: dict[str, Guard] = {
    "time_limit_exceeded": time_limit_exceeded,
    "current_operation": current_operation,
}
