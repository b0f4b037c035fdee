"""The one contract every backend implements: observe in batch, and carry out commands."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from fsm import Entity
from fsm.children import Child
from fsm.observation import FailureKind, Observation

#: each host command and the observation that confirms it took effect (host lifecycle)
HOST_COMMAND_OUTCOMES: Mapping[str, str] = {
    "provision": "running",
    "start": "running",
    "restart": "running",
    "reboot": "running",
    "stop": "stopped",
    "shutdown": "stopped",
    "deallocate": "deallocated",
    "deprovision": "deleted",
}


class CommandResult(NamedTuple):
    """What a command did: data to record on the entity (job id, operation handle, ...) and the
    lifecycle events that record it (default: the command's own name)."""

    data: Mapping[str, Any] | None = None
    events: tuple[str, ...] | None = None
    payload: Mapping[str, Any] | None = None
    #: entities to create in the transaction that records the command (its operation), and
    #: the command to run on each after the commit (fsm.children)
    children: tuple[Child, ...] = ()


class CommandFailed(Exception):
    """The backend could not carry out a command; nothing is recorded, the caller may retry."""

    def __init__(self, command: str, entity_id: str, reason: str) -> None:
        self.command = command
        self.entity_id = entity_id
        self.reason = reason
        super().__init__(f"{command} on {entity_id!r} failed: {reason}")


class Backend(ABC):
    """Turns what a system reports into lifecycle events. Never writes to the database.

    `observe` gets a whole batch and must make one call to the system for it (one `squeue`, one
    list call), not one per entity. Any failure is returned as a failed `Observation`.
    """

    #: a short name, recorded as the `source` of the transitions it causes
    name: str = "backend"
    #: the lifecycles this backend drives
    lifecycles: frozenset[str] = frozenset()
    #: commands of its own beyond the lifecycle's events (e.g. `submit`); `execute` returns
    #: the events that record them
    commands: frozenset[str] = frozenset()
    #: whether `release` does anything: only then does an ended entity get a durable release
    #: obligation that the worker retries until `release` returns
    releases: bool = False
    #: seconds the worker waits for one `observe` / `execute` / `release` call before it
    #: abandons it (the entities of an abandoned observe count as failed looks; a backend whose
    #: abandoned call has not returned gets no new call of that kind meanwhile)
    observe_timeout: float = 30.0
    command_timeout: float = 30.0
    release_timeout: float = 30.0

    @abstractmethod
    def observe(self, entities: Sequence[Entity], now: datetime) -> list[Observation]:
        """One observation per entity, in any order; never raises for a single entity."""

    def execute(
        self, entity: Entity, command: str, arguments: Mapping[str, Any], now: datetime
    ) -> CommandResult:
        """Carry out `command` (idempotently: it may be retried after a crash)."""
        raise CommandFailed(command, entity.id, f"{self.name} does not support {command!r}")

    def release(self, entity: Entity, now: datetime) -> None:  # noqa: B027 - optional hook
        """The entity reached a terminal state: free what it still holds (a process, a job, a
        tunnel). Return normally ONLY once nothing of the entity is held any more (job gone,
        process gone, VM gone); raise any exception when that could not be confirmed (the
        controller is down, a call timed out): the worker retries with backoff, across
        restarts, until it returns. Idempotent, and only ever acting on what this backend
        created or adopted (check the identity inside `release`)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections, tunnels, ..."""

    def observe_safely(self, entities: Sequence[Entity], now: datetime) -> list[Observation]:
        """`observe`, with a whole-call failure turned into a failed observation per entity."""
        try:
            found = {o.entity_id: o for o in self.observe(entities, now)}
        except Exception as exc:  # a backend bug or an outage must not stop the loop
            detail = f"{type(exc).__name__}: {exc}"
            return [Observation.failed(e.id, FailureKind.ERROR, detail) for e in entities]
        return [
            found.get(e.id) or Observation.failed(e.id, FailureKind.MISSING, "not observed")
            for e in entities
        ]
