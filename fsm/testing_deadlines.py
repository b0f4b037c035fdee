"""The deadline rule for your own property tests: record every look a worker makes, then check
that no time limit fired against the rule (`fsm.deadline_rule`).

    recorder = LookRecorder(my_backend)
    worker = Worker(engine, [recorder])
    ...drive it on a ManualClock, with observations failing at random...
    assert deadline_violations(engine, recorder.looks) == []
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from fsm import deadline_rule
from fsm.engine import Engine
from fsm.observation import Observation
from storage import EntityRow


class Look(NamedTuple):
    """One observation attempt of one entity, as the backend was asked for it."""

    entity_id: str
    at: datetime
    state: str
    ok: bool


class LookRecorder:
    """Wraps a backend (anything with `observe_safely`) and records every look it answers."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.looks: list[Look] = []

    def __getattr__(self, name: str) -> Any:  # name, lifecycles, execute, release, timeouts...
        return getattr(self.backend, name)

    def observe_safely(self, entities: Sequence[EntityRow], now: datetime) -> list[Observation]:
        found: list[Observation] = self.backend.observe_safely(entities, now)
        states = {e.id: e.state for e in entities}
        for o in found:
            self.looks.append(
                Look(o.entity_id, now, states.get(o.entity_id, "?"), o.failure is None)
            )
        return found


def deadline_violations(
    engine: Engine,
    looks: Iterable[Look],
    ids: Iterable[str] | None = None,
    *,
    routed: bool = True,
) -> list[str]:
    """Every time-limit transition of the entities (default: all) that broke the rule, as text.

    A time limit of state S, deadline D, bound B, fired at T is allowed only if T >= D and, for
    an entity a backend drives (`routed`), either a look that succeeded in [D, T] saw S, or
    T >= D + B and a look was tried in [D + B, T]."""
    by_entity: dict[str, list[Look]] = {}
    for look in looks:
        by_entity.setdefault(look.entity_id, []).append(look)
    chosen = list(ids) if ids is not None else [e.id for e in engine.list_entities()]
    problems: list[str] = []
    for entity_id in chosen:
        entity = engine.get(entity_id)
        problems += _entity_violations(engine, entity, by_entity.get(entity_id, []), routed)
    return problems


def _entity_violations(
    engine: Engine, entity: EntityRow, looks: list[Look], routed: bool
) -> list[str]:
    lifecycle = engine.lifecycle(entity.lifecycle)
    data: Mapping[str, Any] = entity.data
    entered = entity.created_at
    problems = []
    for t in engine.history(entity.id):
        spec = lifecycle.states.get(t.from_state)
        if spec is not None and spec.on_time_limit == t.event and t.source == "timer":
            deadline = engine._deadline(lifecycle, t.from_state, entered, data)
            problems += _check_fire(
                entity.id, t.from_state, t.observed_at, deadline, entered, looks, routed
            )
        entered = t.observed_at if t.observed_at > entered else entered
    return problems


def _check_fire(
    entity_id: str,
    state: str,
    fired: datetime,
    deadline: datetime | None,
    entered: datetime,
    looks: list[Look],
    routed: bool,
) -> list[str]:
    where = f"{entity_id}: time limit of {state} fired at {fired.isoformat()}"
    if deadline is None:
        return [f"{where}, but {state} has no time limit"]
    if fired < deadline:
        return [f"{where}, before its deadline {deadline.isoformat()}"]
    if not routed:
        return []
    if any(lk.ok and lk.state == state and deadline <= lk.at <= fired for lk in looks):
        return []
    waited = deadline + deadline_rule.bound(deadline, entered)
    if fired < waited:
        return [f"{where}: no successful look since the deadline and the bound ends {waited}"]
    if not any(waited <= lk.at <= fired for lk in looks):
        return [f"{where}: the bound passed, but no look was tried before firing"]
    return []
