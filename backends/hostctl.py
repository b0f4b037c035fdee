"""Host commands and remote executions carried out through the engine, and how far they got.

Every step is a persisted transition. For a backend whose host commands are long-running
operations (Azure), a command is first an operation entity in PENDING (the intent), then its
`start` command sends the request and records the continuation token (PENDING -> RUNNING), then
the host's command moves the host into its transitional state; observations finish both.
Sending before recording the host command means a refused or failed request leaves the host
untouched and the operation FAILED, instead of a host stuck in a transitional state.

A `Ticket` names what was submitted; it round-trips through a URL string (mlos_bench's
`asyncResultsUrl`), so any process with the database can tell how far it got.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs, urlencode

from backends.base import HOST_COMMAND_OUTCOMES
from fsm import Engine, Entity, EntityNotFound, FsmError, InvalidEvent, StorageError
from fsm.worker import BackendLike, Worker

log = logging.getLogger(__name__)

#: where each host command leaves the host when it works
TARGET_STATE = {
    "provision": "RUNNING",
    "start": "RUNNING",
    "restart": "RUNNING",
    "reboot": "RUNNING",
    "stop": "STOPPED",
    "shutdown": "STOPPED",
    "deallocate": "DEALLOCATED",
    "deprovision": "DEPROVISIONED",
}
TRANSITIONAL = frozenset(
    {"PROVISIONING", "STARTING", "STOPPING", "RESTARTING", "DEALLOCATING", "DEPROVISIONING"}
)
EXEC = "exec"
_URL_PREFIX = "fsm:ticket?"
#: the states a machine found outside the database can be adopted in (event `adopted_<state>`)
ADOPTABLE = frozenset(
    {
        "RUNNING",
        "STOPPED",
        "DEALLOCATED",
        "FAILED",
        "PROVISIONING",
        "STARTING",
        "STOPPING",
        "DEALLOCATING",
        "DEPROVISIONING",
    }
)


@dataclass(frozen=True)
class Found:
    """A machine a backend looked up: the host state it is in, and where that was read."""

    state: str
    details: Mapping[str, Any]


class Progress(StrEnum):
    """How far a submission got; the names are mlos_bench's Status names."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"


@dataclass(frozen=True)
class Ticket:
    """A submitted host command (or `exec`), by host and, when there is one, operation."""

    host_id: str | None
    command: str
    operation_id: str | None = None

    def url(self) -> str:
        fields = {"command": self.command}
        if self.host_id:
            fields["host"] = self.host_id
        if self.operation_id:
            fields["operation"] = self.operation_id
        return _URL_PREFIX + urlencode(fields)

    @classmethod
    def parse(cls, url: object) -> Ticket:
        if not isinstance(url, str) or not url.startswith(_URL_PREFIX):
            raise ValueError(f"not an fsm ticket: {url!r}")
        fields = {k: v[-1] for k, v in parse_qs(url[len(_URL_PREFIX) :]).items()}
        command = fields.get("command")
        if not command or (command != EXEC and command not in TARGET_STATE):
            raise ValueError(f"ticket {url!r} names no known command")
        if command == EXEC and not fields.get("operation"):
            raise ValueError(f"exec ticket {url!r} names no operation")
        return cls(fields.get("host"), command, fields.get("operation"))


class HostControl:
    """Submit host commands and executions through a worker, and wait for their outcome.

    With `drive=True` the waits tick the worker themselves (no `fsm run` needed); with
    `drive=False` they only read the database that another worker keeps current.
    """

    def __init__(
        self,
        engine: Engine,
        worker: Worker,
        backend: BackendLike,
        *,
        drive: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine = engine
        self.worker = worker
        self.backend = backend
        self.drive = drive
        self._clock = clock
        self._sleep = sleep

    # -- hosts ---------------------------------------------------------------------------------

    def current_host(self, key: str) -> Entity | None:
        """The latest host entity for `key` (ids `KEY#1`, `KEY#2`, ...: one per incarnation)."""
        latest = None
        n = 1
        while True:
            try:
                latest = self.engine.get(f"{key}#{n}")
            except EntityNotFound:
                return latest
            n += 1

    def host_for(self, key: str, data: Mapping[str, Any]) -> Entity:
        """The live host entity for `key`, or a new one if the last was deprovisioned."""
        latest = self.current_host(key)
        if latest is not None and not latest.terminal:
            return latest
        n = int(latest.id.rsplit("#", 1)[1]) + 1 if latest is not None else 1
        return self.engine.create("host", dict(data), id=f"{key}#{n}")

    def lookup(self, data: Mapping[str, Any]) -> Found | None:
        """One look for the machine `data` names outside the database (None: it does not
        exist). Raises what the backend raised when it could not tell."""
        look = getattr(self.backend, "lookup_host", None)
        if not callable(look):
            return None
        found = look(data)
        if found is not None and not isinstance(found, Found):
            raise TypeError(f"{self.backend.name}.lookup_host returned {found!r}")
        return found

    def adopt(self, key: str, data: Mapping[str, Any], found: Found, *, named_by: str) -> Entity:
        """Record a machine that exists but is not in the database: a host entity (a new
        incarnation, or the NEW one already there) and its `adopted_<state>` transition, whose
        payload says what named it and what the backend saw."""
        if found.state not in ADOPTABLE:
            raise ValueError(f"cannot adopt a machine in state {found.state!r}")
        latest = self.current_host(key)
        host = latest if latest is not None and latest.state == "NEW" else None
        if host is None:
            n = int(latest.id.rsplit("#", 1)[1]) + 1 if latest is not None else 1
            host = self.engine.create("host", {**data, "adopted": True}, id=f"{key}#{n}")
        payload = {"named_by": named_by, **dict(found.details)}
        log.info("adopting %s (%s) in %s", host.id, named_by, found.state)
        self.engine.fire(
            host.id,
            f"adopted_{found.state.lower()}",
            payload,
            source=self.backend.name,
            data={"adopted": True},
        )
        return self.engine.get(host.id)

    def allowed(self, host: Entity, command: str) -> bool:
        return self.engine.lifecycle("host").candidates(host.state, command) is not None

    # -- submitting ----------------------------------------------------------------------------

    def submit(
        self,
        host_id: str,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        call_arguments: Mapping[str, Any] | None = None,
        operation_data: Mapping[str, Any] | None = None,
        time_limit: float | None = None,
    ) -> Ticket:
        """Carry out a host command. `arguments` are recorded on the host (and the operation);
        `call_arguments` only go to the backend's request (recorded redacted on the operation)."""
        arguments = dict(arguments or {})
        host = self.engine.get(host_id)
        if not self.allowed(host, command):
            lifecycle = self.engine.lifecycle("host")
            raise InvalidEvent(
                host.id, host.lifecycle, host.state, command, lifecycle.allowed[host.state]
            )
        if not getattr(self.backend, "host_operations", False):
            self.worker.command(host_id, command, arguments)
            return Ticket(host_id, command)
        data = {"command": command, "host_id": host_id, **(operation_data or {})}
        op = self._new_operation(data, host_id, time_limit)
        if not self._start(op, {**arguments, **(call_arguments or {})}):
            return Ticket(host_id, command, op.id)
        self.worker.command(host_id, command, {**arguments, "operation": op.id})
        return Ticket(host_id, command, op.id)

    def execute(
        self,
        host_id: str | None,
        arguments: Mapping[str, Any],
        *,
        operation_data: Mapping[str, Any] | None = None,
        time_limit: float | None = None,
    ) -> Ticket:
        """Run a script on a host as an operation entity (started at once if the backend sends
        operations itself; a simulated one is driven by its observations alone)."""
        data = {"command": EXEC, "host_id": host_id, **(operation_data or {})}
        op = self._new_operation(data, host_id, time_limit)
        if getattr(self.backend, "starts_operations", False):
            self._start(op, arguments)
        return Ticket(host_id, EXEC, op.id)

    def _new_operation(
        self, data: dict[str, Any], host_id: str | None, time_limit: float | None
    ) -> Entity:
        if time_limit is not None:
            data["time_limits"] = {"PENDING": time_limit, "RUNNING": time_limit}
        return self.engine.create("operation", data, parent_id=host_id)

    def _start(self, op: Entity, arguments: Mapping[str, Any]) -> bool:
        """Send the operation; if that fails, record it FAILED (nothing reached the cloud)."""
        try:
            self.worker.command(op.id, "start", arguments)
            return True
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("operation %s could not be started: %s", op.id, reason)
            self.engine.fire(
                op.id, "fail", {"error": reason}, source=self.backend.name, data={"error": reason}
            )
            return False

    # -- outcome -------------------------------------------------------------------------------

    def progress(self, ticket: Ticket) -> tuple[Progress, dict[str, Any]]:
        """Where the submission stands now, from the database alone (plus one repair)."""
        info: dict[str, Any] = {}
        if ticket.operation_id:
            op = self.engine.get(ticket.operation_id)
            info.update(_operation_info(op))
            if op.state in ("FAILED", "CANCELED"):
                self._host_failed(ticket, op)
                return Progress.FAILED, info
            if op.state == "TIMED_OUT":
                return Progress.TIMED_OUT, info
            if op.state != "SUCCEEDED":
                return Progress.PENDING, info
        if ticket.host_id is None or ticket.command not in TARGET_STATE:
            return Progress.SUCCEEDED, info
        host = self.engine.get(ticket.host_id)
        info.update(host=host.id, hostState=host.state)
        if host.state == TARGET_STATE[ticket.command]:
            return Progress.SUCCEEDED, info
        if host.state == "FAILED":
            history = self.engine.history(host.id)
            timed_out = bool(history) and history[-1].event == "time_limit"
            return (Progress.TIMED_OUT if timed_out else Progress.FAILED), info
        if host.state in TRANSITIONAL:
            if ticket.operation_id and self._confirm(host, ticket):
                return Progress.SUCCEEDED, {**info, "hostState": TARGET_STATE[ticket.command]}
            return Progress.PENDING, info
        if ticket.operation_id and self._unrecorded(host, ticket):
            # the operation was sent but its host command never recorded (the submitter died
            # in between): record it now, the observations take it from there
            self.worker.command(host.id, ticket.command, {"operation": ticket.operation_id})
            return Progress.PENDING, info
        return Progress.FAILED, info

    def _confirm(self, host: Entity, ticket: Ticket) -> bool:
        """The operation that carries out the host's current command succeeded: that is the
        command's confirmation (a listing right after it may still show the old state)."""
        history = self.engine.history(host.id)
        if not history or history[-1].payload.get("operation") != ticket.operation_id:
            return False
        event = HOST_COMMAND_OUTCOMES[ticket.command]
        if not self.allowed(host, event):
            return False
        payload = {"operation": ticket.operation_id, "confirmed_by": "operation succeeded"}
        try:
            self.engine.fire(
                host.id, event, payload, source=self.backend.name, expected_version=host.version
            )
        except FsmError as exc:  # an observation got there first: read it next time
            log.debug("confirming %s: %s", host.id, exc)
            return False
        return self.engine.get(host.id).state == TARGET_STATE[ticket.command]

    def _host_failed(self, ticket: Ticket, op: Entity) -> None:
        """A host still in the transitional state of an operation that failed will never see
        it finish: record `failed` (observations then show where the machine really is)."""
        if ticket.host_id is None:
            return
        host = self.engine.get(ticket.host_id)
        if host.state not in TRANSITIONAL or not self.allowed(host, "failed"):
            return
        history = self.engine.history(host.id)
        if not history or history[-1].payload.get("operation") != op.id:
            return
        payload = {"operation": op.id, "operation_state": op.state}
        self.engine.fire(host.id, "failed", payload, source=self.backend.name)

    def _unrecorded(self, host: Entity, ticket: Ticket) -> bool:
        if not self.allowed(host, ticket.command):
            return False
        return not any(
            t.payload.get("operation") == ticket.operation_id for t in self.engine.history(host.id)
        )

    def wait(
        self, ticket: Ticket, *, timeout: float, interval: float
    ) -> tuple[Progress, dict[str, Any]]:
        """Tick (if driving) and re-read until the submission is settled or `timeout` passes."""
        deadline = self._clock() + timeout
        while True:
            if self.drive:
                self.tick()
            progress, info = self.progress(ticket)
            remaining = deadline - self._clock()
            if progress is not Progress.PENDING:
                return progress, info
            if remaining <= 0:
                return Progress.TIMED_OUT, info
            self._sleep(max(0.0, min(interval, remaining)))

    def tick(self) -> None:
        try:
            self.worker.tick()
        except StorageError as exc:  # the database went away: the next tick tries again
            log.error("tick failed: %s", exc)


def _operation_info(op: Entity) -> dict[str, Any]:
    info: dict[str, Any] = {"operation": op.id, "operationState": op.state}
    for key, name in (
        ("stdout", "stdout"),
        ("stderr", "stderr"),
        ("exit_code", "exitCode"),
        ("execution_state", "executionState"),
        ("start_time", "startTime"),
        ("end_time", "endTime"),
        ("retry_after", "retryAfter"),
        ("error", "error"),
    ):
        if key in op.data:
            info[name] = op.data[key]
    return info
