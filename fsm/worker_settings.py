"""What a worker is configured with, what it counts, and what it needs of a backend."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from fsm import validation
from fsm.observation import Observation
from storage import EntityRow

#: seconds a backend call may take when the backend does not say (contract 2)
DEFAULT_CALL_TIMEOUT = 30.0


class CommandResultLike(Protocol):
    @property
    def data(self) -> Mapping[str, Any] | None: ...

    @property
    def events(self) -> tuple[str, ...] | None: ...

    @property
    def payload(self) -> Mapping[str, Any] | None: ...


class BackendLike(Protocol):
    """What the worker needs of a backend (see `backends.base.Backend`); the optional
    `observe_timeout`, `command_timeout` and `release_timeout` bound each kind of call."""

    name: str
    lifecycles: frozenset[str]
    commands: frozenset[str]
    releases: bool

    def observe_safely(self, entities: Sequence[EntityRow], now: datetime) -> list[Observation]: ...

    def execute(
        self, entity: EntityRow, command: str, arguments: Mapping[str, Any], now: datetime
    ) -> CommandResultLike: ...

    def release(self, entity: EntityRow, now: datetime) -> None: ...


def call_timeout(backend: BackendLike, kind: str) -> float:
    """The backend's own bound for `kind` ("observe", "command", "release"), validated."""
    value = getattr(backend, f"{kind}_timeout", DEFAULT_CALL_TIMEOUT)
    return validation.seconds(value, f"{backend.name}.{kind}_timeout", positive=True)


@dataclass(frozen=True)
class WorkerSettings:
    """`batch_size` and `max_batches_per_tick` are None by default: the worker sizes its
    batches and ticks from how long a batch takes (`fsm.worker_sizing`); a number fixes them."""

    batch_size: int | None = None
    lease_seconds: float = 30.0
    max_backoff: float = 300.0
    max_batches_per_tick: int | None = None
    command_batch: int = 50
    #: cap of the exponential backoff between two attempts of one release
    max_release_backoff: float = 300.0

    def __post_init__(self) -> None:
        validation.count(self.command_batch, "command_batch", minimum=1, maximum=1_000_000)
        for name in ("batch_size", "max_batches_per_tick"):  # None: the worker sizes them
            if getattr(self, name) is not None:
                validation.count(getattr(self, name), name, minimum=1, maximum=1_000_000)
        for name in ("lease_seconds", "max_backoff", "max_release_backoff"):
            validation.seconds(getattr(self, name), name, positive=True)


@dataclass
class TickStats:
    """What one tick did; summed over batches."""

    claimed: int = 0
    transitions: int = 0
    failed_observations: int = 0
    rejected_events: int = 0
    leases_lost: int = 0
    takeovers: int = 0
    backend_calls: int = 0
    timeouts: int = 0
    commands: int = 0
    batches: int = 0
    releases: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    #: the refresh stopped with entities still due (its budget was spent): tick again now
    behind: bool = False

    def add(self, other: TickStats) -> None:
        for name in (
            "claimed",
            "transitions",
            "failed_observations",
            "rejected_events",
            "leases_lost",
            "takeovers",
            "backend_calls",
            "timeouts",
            "commands",
            "batches",
            "releases",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for kind, n in other.failures.items():
            self.failures[kind] = self.failures.get(kind, 0) + n
        self.behind = self.behind or other.behind


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
