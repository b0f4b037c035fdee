"""`Supervisor`: a service kept running, as the Python API sees it.

Creating one records the supervisor entity only (PENDING, with its spec and policy); a worker
launches every attempt. `ensure_healthy` waits for the current attempt to be HEALTHY and
returns where it answers; `stop` asks for the supervisor to end, its attempt with it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from fsm import validation
from fsm.engine import Engine
from fsm.errors import FsmError, InvalidInput
from fsm.supervision import RESTART_KEY, SOURCE, SUPERVISOR
from fsm.supervision_policy import Policy, Spec
from storage import EntityRow, TransitionRow, queue

_ATTEMPT = re.compile(r"-a(\d{1,9})$")


class NotHealthy(FsmError):
    """No healthy attempt: the supervisor gave up or was stopped, or the wait timed out.
    `reason` says why, in words taken from the supervisor's history."""

    def __init__(self, supervisor_id: str, state: str, reason: str) -> None:
        self.supervisor_id = supervisor_id
        self.state = state
        self.reason = reason
        super().__init__(f"supervisor {supervisor_id} is {state}: {reason}")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a supervisor: its number and the service entity that ran it."""

    number: int
    entity: EntityRow


def endpoint_of(data: Mapping[str, Any]) -> tuple[str, int] | None:
    """Where a service answers, from what its backend recorded: an SSH tunnel's local end,
    else the node and port (a local process: this machine)."""
    tunnel = data.get("tunnel")
    local = tunnel.get("local_port") if isinstance(tunnel, Mapping) else None
    if _port(local):
        return "127.0.0.1", local
    port = data.get("port")
    if not _port(port):
        return None
    node = data.get("node")
    host = node if isinstance(node, str) and node else "127.0.0.1"
    return host, port


def _port(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def describe(t: TransitionRow) -> str:
    """A supervisor transition in words, for errors and the CLI."""
    p = t.payload
    if t.event in ("attempt_ended", "budget_spent", "not_restarted", "attempt_stopped"):
        text = f"attempt {p.get('attempt')} ended {p.get('ended')} by {p.get('by')}"
        text += f" ({p.get('source')})"
        if t.event == "attempt_ended":
            return f"{text}; restart {p.get('restarts')} in {p.get('restart_in')} s"
        if t.event == "budget_spent":
            window = p.get("window")
            within = f" within {window:g} s" if isinstance(window, (int, float)) else ""
            return f"{text}; {p.get('max_restarts')} restarts{within} already used: gave up"
        if t.event == "not_restarted":
            return f"{text}; the policy restarts only on {p.get('policy_on')}"
        return text
    if t.event == "launch":
        return f"attempt {p.get('attempt')} launched as {p.get('child')}"
    if t.event == "launch_failed":
        return f"attempt {p.get('attempt')} not launched: {p.get('reason')}"
    return f"{t.event} ({t.source})"


class Supervisor:
    """A supervisor entity; `Supervisor.create` makes one, `Supervisor(engine, id)` attaches."""

    def __init__(self, engine: Engine, id: str) -> None:
        self.engine = engine
        self.id = validation.text(id, "supervisor id")

    @classmethod
    def create(
        cls,
        engine: Engine,
        spec: Mapping[str, Any],
        policy: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
    ) -> Supervisor:
        """Record a supervisor for `spec` (see `Spec`) under `policy` (see `Policy`); a worker
        launches its first attempt. Bad input raises `InvalidInput` and records nothing."""
        parsed = Spec.from_dict(spec)
        engine.lifecycle(parsed.lifecycle)  # UnknownLifecycle now, not at the first launch
        if parsed.lifecycle == SUPERVISOR:
            raise InvalidInput("spec.lifecycle", "a supervisor cannot supervise supervisors")
        rules = Policy.from_dict(policy)
        terminal = engine.lifecycle(parsed.lifecycle).terminal
        missing = sorted(rules.on - terminal)
        if missing or "HEALTHY" not in engine.lifecycle(parsed.lifecycle).states:
            raise InvalidInput(
                "spec.lifecycle",
                f"{parsed.lifecycle!r} needs a HEALTHY state and the terminal states {missing}",
            )
        if id is not None and _ATTEMPT.search(id):
            raise InvalidInput("id", "must not end like an attempt's id (-a<N>)")
        data = {"spec": parsed.to_dict(), "policy": rules.to_dict(), "attempt": 0}
        row = engine.create(SUPERVISOR, data, id=id)
        return cls(engine, row.id)

    # -- reads -------------------------------------------------------------------------------

    def entity(self) -> EntityRow:
        row = self.engine.get(self.id)
        if row.lifecycle != SUPERVISOR:
            raise FsmError(f"{self.id} is a {row.lifecycle}, not a supervisor")
        return row

    @property
    def state(self) -> str:
        return self.entity().state

    def attempts(self) -> list[Attempt]:
        """Every attempt so far, first to last."""
        found = []
        for child in self.engine.list_entities(parent_id=self.id):
            match = _ATTEMPT.search(child.id)
            if match and child.id == f"{self.id}-a{match.group(1)}":
                found.append(Attempt(int(match.group(1)), child))
        return sorted(found, key=lambda a: a.number)

    def current(self) -> EntityRow | None:
        """The attempt the supervisor is on now: its newest (None before the first launch)."""
        attempts = self.attempts()
        return attempts[-1].entity if attempts else None

    def reason(self) -> str:
        """The supervisor's latest decision, in words."""
        history = self.engine.history(self.id)
        decided = [t for t in history if t.source == SOURCE or t.event == "stop"]
        return (
            describe(decided[-1]) if decided else "no attempt launched yet (is a worker running?)"
        )

    # -- waiting and stopping ----------------------------------------------------------------

    def ensure_healthy(
        self,
        timeout: float = 600.0,
        *,
        every: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> tuple[str, int]:
        """(host, port) of the current attempt once it is HEALTHY; `NotHealthy` with the
        reason when the supervisor ended or `timeout` seconds passed first."""
        validation.seconds(timeout, "timeout")
        validation.seconds(every, "every", positive=True)
        deadline = monotonic() + timeout
        while True:
            sup = self.entity()
            if sup.terminal:
                raise NotHealthy(self.id, sup.state, self.reason())
            child = self.current()
            if child is not None and child.state == "HEALTHY":
                where = endpoint_of(child.data)
                if where is not None:
                    return where
            if monotonic() >= deadline:
                now = f"attempt {child.id} is {child.state}" if child else "no attempt yet"
                raise NotHealthy(
                    self.id, sup.state, f"not healthy after {timeout:g} s ({now}); {self.reason()}"
                )
            sleep(every)

    def restart(self) -> str | None:
        """Ask for a fresh attempt now: the current one is stopped (by a `stop` the worker
        carries out) and replaced at once, without backoff and outside the restart budget.
        Returns the id of the attempt being replaced (None if none is live)."""
        current = self.current()
        if self.entity().terminal or current is None or current.terminal:
            return None
        now = self.engine.now()
        with self.engine.store.transaction() as uow:
            queue.schedule_command(uow, current.id, "stop", {RESTART_KEY: True}, now, now)
        return current.id

    def stop(self) -> str:
        """Ask the supervisor to stop: the worker ends its attempt and restarts nothing.
        Returns the new state (STOPPING, or STOPPED when no attempt was live)."""
        sup = self.entity()
        if sup.terminal:
            return sup.state
        outcome = self.engine.fire(self.id, "stop", source="user")
        return str(outcome.state)
