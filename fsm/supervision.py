"""The worker's supervision step: decide, from the database alone, what each live supervisor
does next, and write that decision with its consequences in one transaction.

A decision is a pure function of the supervisor's row, its current attempt's row and how that
attempt ended (`decide`). Launching attempt N creates the child `<supervisor>-aN` (and, for a
backend that needs one, its `submit` command) in the same transaction as the `launch`
transition: a worker killed at any point has either done all of it or none, and a second worker
deciding the same launch fails on the supervisor's version and on the child's id. Nothing is
kept in memory between ticks, so a restarted worker carries on where the database says.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from fsm.errors import FsmError
from fsm.events import Event, NewEntity
from fsm.supervision_policy import Policy, Spec, attempt_id
from storage import DuplicateEntity, EntityRow, TransitionRow, VersionConflict, queue, releases
from storage.supervisors import open_entities

if TYPE_CHECKING:
    from fsm.worker import Worker

log = logging.getLogger(__name__)

SUPERVISOR = "supervisor"
SOURCE = "supervisor"
#: the argument of a `stop` of an attempt that asks its supervisor for a restart now
RESTART_KEY = "restart"
_NUMBER = re.compile(r"-a(\d{1,9})$")


@dataclass(frozen=True, slots=True)
class Ending:
    """How an attempt ended: its terminal state, the event and source that put it there."""

    state: str
    event: str
    source: str
    at: datetime
    asked: bool = False  # stopped with `{"restart": true}`: a restart someone asked for

    @classmethod
    def of(cls, child: EntityRow, last: TransitionRow | None) -> Ending:
        if last is None:
            return cls(child.state, "created", "unknown", child.state_entered_at)
        asked = last.event == "stop" and last.payload.get(RESTART_KEY) is True
        return cls(child.state, last.event, last.source, child.state_entered_at, asked)

    def as_payload(self) -> dict[str, Any]:
        found = {"ended": self.state, "by": self.event, "source": self.source}
        return {**found, "asked": True} if self.asked else found


@dataclass(frozen=True, slots=True)
class Plan:
    """What one supervision step writes: an event on the supervisor (or only data), and the
    attempt to create or to stop with it."""

    event: str | None
    at: datetime
    payload: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    launch: int | None = None
    stop_child: str | None = None


def _times(value: object) -> list[datetime]:
    if not isinstance(value, list):
        return []
    found = []
    for item in value:
        try:
            found.append(datetime.fromisoformat(item))
        except (TypeError, ValueError):
            continue
    return found


def _number(child: EntityRow) -> int:
    match = _NUMBER.search(child.id)
    return int(match.group(1)) if match else 0


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def decide(
    sup: EntityRow,
    child: EntityRow | None,
    ending: Ending | None,
    policy: Policy,
    now: datetime,
    held: bool = False,
) -> Plan | None:
    """The supervisor's next step, or None when there is nothing to do yet. `held`: the ended
    attempt's release is not confirmed yet (its job or process may still run), so nothing is
    launched, and a stop is not complete, until it is."""
    data = sup.data
    attempt = _number(child) if child is not None else 0
    state = sup.state
    if state == "PENDING" or (state == "BACKOFF" and _due(data, now)):
        if (child is not None and not child.terminal) or held:
            return None  # never a second live attempt, whatever moved the supervisor here
        n = attempt + 1
        payload: dict[str, Any] = {"attempt": n, "child": attempt_id(sup.id, n)}
        return Plan("launch", now, payload, {"attempt": n, "child": payload["child"]}, launch=n)
    if state == "STOPPING":
        if child is not None and not child.terminal:
            if data.get("stop_sent") == child.id:
                return None
            return Plan(None, now, data={"stop_sent": child.id}, stop_child=child.id)
        if held:
            return None
        payload = {"attempt": attempt, **(ending.as_payload() if ending else {})}
        return Plan("attempt_stopped", ending.at if ending else now, payload)
    if state not in ("STARTING", "RUNNING"):
        return None
    if child is not None and not child.terminal:
        if state == "STARTING" and child.state == "HEALTHY":
            started = child.state_entered_at + timedelta(seconds=policy.grace)
            if started <= now:
                return Plan("attempt_started", started, {"attempt": attempt, "grace": policy.grace})
        return None
    if ending is None:  # the attempt is gone (or not ours): it ended, cause unknown
        ending = Ending("FAILED", "missing", "unknown", now)
    return _after_end(sup, attempt, ending, policy)


def _due(data: Mapping[str, Any], now: datetime) -> bool:
    times = _times([data.get("next_attempt_at")])
    return not times or times[0] <= now


def _after_end(sup: EntityRow, attempt: int, ending: Ending, policy: Policy) -> Plan:
    payload = {"attempt": attempt, **ending.as_payload()}
    if ending.asked:  # at once, and not held against the budget
        now = ending.at.isoformat()
        data = {"in_a_row": 0, "next_attempt_at": now}
        return Plan("attempt_ended", ending.at, {**payload, "restart_in": 0.0}, data)
    if ending.state not in policy.on:
        return Plan("not_restarted", ending.at, {**payload, "policy_on": sorted(policy.on)})
    restarts = _times(sup.data.get("restarts"))
    used = policy.restarts_in_window(restarts, ending.at)
    if used >= policy.max_restarts:
        spent = {"restarts": used, "max_restarts": policy.max_restarts, "window": policy.window}
        return Plan("budget_spent", ending.at, {**payload, **spent})
    in_a_row = 1 if sup.state == "RUNNING" else _int(sup.data.get("in_a_row")) + 1
    delay = policy.delay(sup.id, attempt, in_a_row)
    next_at = ending.at + timedelta(seconds=delay)
    kept = (
        [t.isoformat() for t in restarts[-(policy.max_restarts - 1) :]]
        if policy.max_restarts > 1
        else []
    )
    data = {
        "in_a_row": in_a_row,
        "next_attempt_at": next_at.isoformat(),
        "restarts": [*kept, ending.at.isoformat()],
    }
    payload.update(restart_in=round(delay, 6), next_attempt_at=next_at.isoformat())
    payload["restarts"] = used + 1
    return Plan("attempt_ended", ending.at, payload, data)


# -- the worker step ---------------------------------------------------------------------------


def supervise(worker: Worker, limit: int = 500) -> int:
    """One pass over live supervisors whose attempts this worker can drive; returns the number
    of supervisors it moved. A supervisor another worker moved meanwhile is left to it."""
    engine = worker.engine
    moved = 0
    for sup in open_entities(engine.store, SUPERVISOR, limit):
        try:
            if _plan(worker, sup, None) is not None and _step(worker, sup.id):
                moved += 1
        except (VersionConflict, DuplicateEntity):
            log.info("supervisor %s: another worker decided first", sup.id)
        except FsmError as exc:
            log.warning("supervisor %s: %s", sup.id, exc)
    return moved


def _parsed(sup: EntityRow) -> tuple[Spec, Policy]:
    return Spec.from_dict(sup.data.get("spec")), Policy.from_dict(sup.data.get("policy"))


def _plan(worker: Worker, sup: EntityRow, uow: Any) -> Plan | None:
    """The supervisor's next step: first from plain reads (most ticks have nothing to do, and
    need no write transaction), then again on the rows locked in `uow`."""
    spec, policy = _parsed(sup)
    if spec.lifecycle not in worker.routes:
        return None  # another worker (one that drives its attempts) supervises it
    child, ending = _current(worker.engine, uow, sup)
    held = child is not None and child.terminal and _held(worker.engine, child.id)
    return decide(sup, child, ending, policy, worker.engine.clock(), held)


def _held(engine: Any, entity_id: str) -> bool:
    """Whether the entity's release obligation is still pending (contract 1)."""
    with engine.store.reading() as conn:
        obligation = releases.for_entity(conn, entity_id)
    return obligation is not None and obligation.released_at is None


def _step(worker: Worker, sup_id: str) -> bool:
    engine = worker.engine
    with engine.store.transaction() as uow:
        rows = uow.lock_entities([sup_id])
        sup = rows.get(sup_id)
        if sup is None or sup.terminal or sup.lifecycle != SUPERVISOR:
            return False
        plan = _plan(worker, sup, uow)
        if plan is None:
            return False
        spec = _parsed(sup)[0]
        now = engine.clock()
        if plan.launch is not None and not _launch(worker, uow, sup, spec, plan.launch, now):
            taken = attempt_id(sup.id, plan.launch)
            plan = Plan(
                "launch_failed",
                now,
                {
                    "attempt": plan.launch,
                    "child": taken,
                    "reason": "an entity not of this supervisor has its id",
                },
            )
        if plan.stop_child is not None:
            queue.schedule_command(uow, plan.stop_child, "stop", {}, now, now)
        batch = engine.stage(uow, rows)
        if plan.event is None:
            batch.merge_data(sup.id, plan.data)
        else:
            event = Event(sup.id, plan.event, plan.payload, SOURCE, plan.at, data=plan.data or None)
            outcome = batch.add(event)
            if outcome.error is not None:
                raise outcome.error
        batch.flush()
    engine.committed(batch)
    return True


def _current(engine: Any, uow: Any, sup: EntityRow) -> tuple[EntityRow | None, Ending | None]:
    """The supervisor's current attempt (locked) and, once it ended, how. Found from the
    children themselves, never from what the supervisor's data names: the newest entity
    whose parent is this supervisor and whose id is its attempt id."""
    numbered = {}
    for child in engine.store.list_entities(parent_id=sup.id):
        match = _NUMBER.search(child.id)
        if match and child.id == attempt_id(sup.id, int(match.group(1))):
            numbered[int(match.group(1))] = child.id
    if not numbered:
        return None, None
    newest = numbered[max(numbered)]
    child = uow.lock_entities([newest]).get(newest) if uow is not None else engine.get(newest)
    if child is None or child.parent_id != sup.id:
        return None, None
    if not child.terminal:
        return child, None
    history = engine.store.history(child.id)
    return child, Ending.of(child, history[-1] if history else None)


def _launch(worker: Worker, uow: Any, sup: EntityRow, spec: Spec, n: int, now: datetime) -> bool:
    """Create attempt `n` (and its submit command) in `uow`; False if its id is taken."""
    child_id = attempt_id(sup.id, n)
    if uow.lock_entities([child_id]):
        return False
    fields: dict[str, Any] = {
        "lifecycle": spec.lifecycle,
        "data": {**spec.data, "supervisor": sup.id, "attempt": n},
        "id": child_id,
        "parent_id": sup.id,
    }
    if spec.profile is not None and "profile" in NewEntity._fields:
        fields["profile"] = spec.profile
    worker.engine.create_in(uow, [NewEntity(**fields)])
    backend = worker.routes.get(spec.lifecycle)
    if backend is not None and "submit" in backend.commands:
        queue.schedule_command(uow, child_id, "submit", dict(spec.submit), now, now)
    return True
