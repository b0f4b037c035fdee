"""What a worker tells the outside about its work: metrics, and an audit of its leases."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from fsm.errors import FsmError


class WorkerStuck(FsmError):
    """The worker cannot make progress (e.g. its audit file cannot be written): say why once
    and stop, rather than fail every tick."""


class WorkerListener:
    """Receives what a worker does (Prometheus metrics, a lease audit); override what you need."""

    def observation_failed(self, kind: str) -> None:
        """An observation failed; `kind` is a `FailureKind` value."""

    def lease_taken_over(self, count: int) -> None:
        """`count` expired leases of other workers were taken over."""

    def refresh_done(self, seconds: float, entities: int) -> None:
        """A batch of `entities` was claimed, observed and recorded in `seconds`."""

    def leased(self, worker: str, ids: Sequence[str], at: datetime, until: datetime) -> None:
        """`worker` holds leases on `ids` from `at` until at most `until`."""

    def released(self, worker: str, ids: Sequence[str], at: datetime) -> None:
        """`worker` gives the leases on `ids` back at `at`: called just before the batch
        commits, so a worker killed right after its commit leaves no lease open in the audit
        that the database no longer holds."""


class FanOut(WorkerListener):
    """Forwards every notification to several listeners."""

    def __init__(self, listeners: Sequence[WorkerListener]) -> None:
        self.listeners = list(listeners)

    def observation_failed(self, kind: str) -> None:
        for listener in self.listeners:
            listener.observation_failed(kind)

    def lease_taken_over(self, count: int) -> None:
        for listener in self.listeners:
            listener.lease_taken_over(count)

    def refresh_done(self, seconds: float, entities: int) -> None:
        for listener in self.listeners:
            listener.refresh_done(seconds, entities)

    def leased(self, worker: str, ids: Sequence[str], at: datetime, until: datetime) -> None:
        for listener in self.listeners:
            listener.leased(worker, ids, at, until)

    def released(self, worker: str, ids: Sequence[str], at: datetime) -> None:
        for listener in self.listeners:
            listener.released(worker, ids, at)


class LeaseAudit(WorkerListener):
    """Appends every lease taken and given back to a JSON-lines file, so a test (or an operator)
    can check afterwards that no entity was ever held by two live leases.

    The file is opened once, up front (no symlink followed, mode 0600): a path that cannot be
    written is refused before the worker takes any lease. One `write` per line (O_APPEND)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._fd: int | None = os.open(path, flags, 0o600)
        except OSError as exc:
            raise WorkerStuck(f"cannot write the lease audit {path}: {exc.strerror}") from None

    def _write(self, entry: dict[str, Any]) -> None:
        if self._fd is None:
            raise WorkerStuck(f"the lease audit {self.path} is closed")
        try:
            os.write(self._fd, (json.dumps(entry) + "\n").encode())
        except OSError as exc:
            raise WorkerStuck(f"cannot write the lease audit {self.path}: {exc.strerror}") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def leased(self, worker: str, ids: Sequence[str], at: datetime, until: datetime) -> None:
        self._write(
            {
                "worker": worker,
                "leased": list(ids),
                "at": at.isoformat(),
                "until": until.isoformat(),
            }
        )

    def released(self, worker: str, ids: Sequence[str], at: datetime) -> None:
        self._write({"worker": worker, "released": list(ids), "at": at.isoformat()})
