"""Helpers for the supervision tests: a simulator whose attempts live as long as a test says,
a driver for worker + supervision ticks on a manual clock, and an independent oracle."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from backends.sim import ServicePlan, SimBackend
from fsm import Engine, Entity, ManualClock
from fsm.supervisor import Supervisor
from fsm.worker import Worker

_ATTEMPT = re.compile(r"-a(\d+)$")
RUN_START = 0.5  # the job runs this long after the attempt was created
BOOT = 0.5  # and answers its health check this long after that


class ScriptedSim(SimBackend):
    """The simulator, with the fate of attempt N of any supervisor given by the test:
    `("fails", t)` ends FAILED t seconds after creation, `("timeout", t)` TIMEOUT,
    `("cancelled", t)` STOPPED by someone else's cancel; attempts beyond the script stay up."""

    def __init__(self, script: Mapping[int, tuple[str, float]]) -> None:
        super().__init__(seed=0)
        self.script = dict(script)

    def _step(self, entity_id: str) -> tuple[str, float] | None:
        match = _ATTEMPT.search(entity_id)
        return self.script.get(int(match.group(1))) if match else None

    def service_plan(self, entity_id: str) -> ServicePlan:
        step = self._step(entity_id)
        if step is None or step[0] == "cancelled":
            return ServicePlan("healthy", RUN_START, None, BOOT, 1e9, 1.5, 1e9)
        kind, life = step
        fate = "fails" if kind == "fails" else "healthy"
        return ServicePlan(fate, RUN_START, None, BOOT, life, 1.5, 1e9)

    def _service_events(self, entity: Entity, t: float) -> tuple[str, ...]:
        step = self._step(entity.id)
        if step is not None and step[0] == "cancelled" and t >= step[1]:
            return ("job_cancelled",)  # someone else cancelled the job (an scancel)
        return super()._service_events(entity, t)


def tick(worker: Worker) -> None:
    worker.tick()  # supervision included


def drive(
    worker: Worker,
    clock: ManualClock,
    sup: Supervisor,
    *,
    step: float,
    until: float,
    stop_at: float | None = None,
) -> datetime | None:
    """Tick every `step` seconds until the supervisor ends or `until` seconds passed; stop it
    at `stop_at`. Returns when the stop was asked (None if it was not)."""
    start = clock.now
    stopped: datetime | None = None
    while (clock.now - start).total_seconds() < until:
        if (
            stop_at is not None
            and stopped is None
            and (clock.now - start).total_seconds() >= stop_at
        ):
            sup.stop()
            stopped = clock.now
        tick(worker)
        if sup.entity().terminal:
            break
        clock.advance(step)
    return stopped


@dataclass(frozen=True)
class Lived:
    """One attempt as its own history tells it."""

    number: int
    created: datetime
    end: datetime | None  # None: still live
    state: str
    healthy_for: float  # the longest HEALTHY stretch, in seconds
    ever_healthy: bool


def lived(engine: Engine, attempts: list[Entity]) -> list[Lived]:
    out = []
    for n, child in enumerate(attempts, start=1):
        history = engine.history(child.id)
        longest, since, ever = 0.0, None, False
        for t in history:
            if t.to_state == "HEALTHY":
                since, ever = t.observed_at, True
            elif since is not None:
                longest = max(longest, (t.observed_at - since).total_seconds())
                since = None
        end = child.state_entered_at if child.terminal else None
        out.append(Lived(n, child.created_at, end, child.state, longest, ever))
    return out


def in_window(times: list[datetime], at: datetime, window: float | None) -> int:
    if window is None:
        return len(times)
    return sum(1 for t in times if t > at - timedelta(seconds=window))
