"""Typed errors of the engine. Storage errors are re-exported so callers need one import."""

from __future__ import annotations

from collections.abc import Sequence

from fsm.redaction import redact_text
from storage.errors import (
    DatabaseCorrupt,
    DatabaseFull,
    DatabaseUnavailable,
    DuplicateEntity,
    EntityNotFound,
    StorageError,
    VersionConflict,
)

__all__ = [
    "CallbackError",
    "DatabaseCorrupt",
    "DatabaseFull",
    "DatabaseUnavailable",
    "DefinitionError",
    "DuplicateEntity",
    "EntityNotFound",
    "FsmError",
    "InvalidEvent",
    "InvalidInput",
    "StorageError",
    "UnknownLifecycle",
    "VersionConflict",
]


class FsmError(Exception):
    """Base class of the engine's own errors."""


class DefinitionError(FsmError, ValueError):
    """A lifecycle definition is malformed; `problems` lists every problem found, not just one."""

    def __init__(self, name: str, problems: Sequence[str]) -> None:
        self.name = name
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"lifecycle {name!r} has {len(self.problems)} problem(s):\n{lines}")


class InvalidInput(FsmError, ValueError):
    """A value given to the engine is not one it can store (wrong type, too long, too deep, out of
    range, not JSON); nothing was written. `field` names it, e.g. `payload.job.id`."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field} {problem}")


class UnknownLifecycle(FsmError, LookupError):
    """No lifecycle of that name is registered with the engine."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(f"unknown lifecycle {name!r}; known: {', '.join(self.known) or 'none'}")


class InvalidEvent(FsmError):
    """The event is not allowed in the entity's current state; nothing was written."""

    def __init__(
        self, entity_id: str, lifecycle: str, state: str, event: str, allowed: Sequence[str]
    ) -> None:
        self.entity_id = entity_id
        self.lifecycle = lifecycle
        self.state = state
        self.event = event
        self.allowed = tuple(allowed)
        allowed_text = ", ".join(self.allowed) if self.allowed else "none (terminal state)"
        shown = repr(event) if len(event) <= 80 else f"{event[:60]!r}... ({len(event)} chars)"
        super().__init__(
            f"{lifecycle} {entity_id!r} is {state}: event {shown} is not allowed "
            f"(allowed: {allowed_text})"
        )


class CallbackError(FsmError):
    """A guard or callback raised; the entity was left exactly as it was."""

    def __init__(self, entity_id: str, event: str, name: str, cause: BaseException) -> None:
        self.entity_id = entity_id
        self.event = event
        self.name = name
        self.cause = cause
        super().__init__(
            f"{name!r} raised while handling {event!r} on {entity_id!r}: "
            f"{type(cause).__name__}: {redact_text(str(cause))}"
        )
