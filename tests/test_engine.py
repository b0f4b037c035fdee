"""The engine's contract: atomic, versioned, typed errors, nothing half-written."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from fsm import (
    CallbackError,
    Definition,
    Engine,
    EntityNotFound,
    Event,
    EventContext,
    FsmError,
    InvalidEvent,
    Lifecycle,
    ManualClock,
    NewEntity,
    VersionConflict,
)

TOGGLE = {
    "name": "toggle",
    "states": [
        {"name": "OFF", "initial": True},
        {"name": "ON"},
        {"name": "GONE", "terminal": True},
    ],
    "transitions": [
        {"trigger": "flip", "source": "OFF", "dest": "ON", "guards": "allowed"},
        {"trigger": "flip", "source": "ON", "dest": "OFF", "after": "audit"},
        {"trigger": "touch", "source": ["OFF", "ON"], "dest": "="},
        {"trigger": "remove", "source": "*", "dest": "GONE"},
    ],
}


class Hooks:
    def __init__(self) -> None:
        self.allow: Any = True
        self.audit_error: Exception | None = None
        self.audited: list[str] = []

    def allowed(self, ctx: EventContext) -> bool:
        if isinstance(self.allow, Exception):
            raise self.allow
        return bool(self.allow)

    def audit(self, ctx: EventContext, dest: str) -> None:
        if self.audit_error is not None:
            raise self.audit_error
        self.audited.append(f"{ctx.state}->{dest}")


@pytest.fixture
def hooks(engine: Engine) -> Hooks:
    h = Hooks()
    engine.register(
        Lifecycle(
            Definition.from_dict(TOGGLE, known_guards={"allowed"}),
            guards={"allowed": h.allowed},
            callbacks={"audit": h.audit},
        )
    )
    return h


def snapshot(engine: Engine, entity_id: str) -> tuple[Any, ...]:
    e = engine.get(entity_id)
    return (e.state, e.version, e.seq, e.data, len(engine.history(entity_id)))


def test_fire_records_state_version_and_history_together(engine: Engine) -> None:
    s = engine.create("service", {"job_id": 7})
    out = engine.fire(s.id, "job_pending", {"reason": "queued"}, source="backend")
    assert (out.state, out.version, out.changed) == ("PENDING", 2, True)
    got = engine.get(s.id)
    assert (got.state, got.version, got.seq) == ("PENDING", 2, 1)
    [t] = engine.history(s.id)
    assert (t.seq, t.from_state, t.to_state, t.event, t.source) == (
        1,
        "SUBMITTED",
        "PENDING",
        "job_pending",
        "backend",
    )
    assert t.payload == {"reason": "queued"}
    assert t.definition_version == engine.lifecycle("service").version


def test_invalid_event_names_state_and_allowed_events_and_writes_nothing(engine: Engine) -> None:
    s = engine.create("service")
    before = snapshot(engine, s.id)
    with pytest.raises(InvalidEvent) as err:
        engine.fire(s.id, "ping_ok")
    assert err.value.state == "SUBMITTED"
    assert "job_running" in err.value.allowed and "ping_ok" not in err.value.allowed
    assert "SUBMITTED" in str(err.value) and "ping_ok" in str(err.value)
    assert snapshot(engine, s.id) == before


def test_event_that_keeps_the_state_records_nothing(engine: Engine) -> None:
    s = engine.create("service")
    engine.fire(s.id, "job_pending")
    before = snapshot(engine, s.id)
    out = engine.fire(s.id, "job_pending")
    assert not out.changed and out.state == "PENDING"
    assert snapshot(engine, s.id) == before


def test_stale_version_is_a_conflict_and_writes_nothing(engine: Engine) -> None:
    s = engine.create("service")
    engine.fire(s.id, "job_pending", expected_version=1)
    before = snapshot(engine, s.id)
    with pytest.raises(VersionConflict) as err:
        engine.fire(s.id, "job_running", expected_version=1)
    assert (err.value.expected, err.value.actual) == (1, 2)
    assert snapshot(engine, s.id) == before


def test_two_engines_on_one_database_detect_each_others_writes(
    engine: Engine, db_url: str, clock: ManualClock
) -> None:
    other = Engine(db_url, clock=clock)
    try:
        s = engine.create("service")
        seen = other.get(s.id).version
        engine.fire(s.id, "job_pending")
        with pytest.raises(VersionConflict):
            other.fire(s.id, "job_running", expected_version=seen)
        assert engine.get(s.id).state == "PENDING"
    finally:
        other.close()


@pytest.mark.parametrize("failure", ["guard", "callback"])
def test_raising_guard_or_callback_rolls_back_everything(
    engine: Engine, hooks: Hooks, failure: str
) -> None:
    e = engine.create("toggle")
    if failure == "callback":
        engine.fire(e.id, "flip")
        hooks.audit_error = RuntimeError("audit log is down")
    else:
        hooks.allow = RuntimeError("guard exploded")
    before = snapshot(engine, e.id)
    with pytest.raises(CallbackError) as err:
        engine.fire(e.id, "flip")
    assert isinstance(err.value.cause, RuntimeError)
    assert err.value.name == ("audit" if failure == "callback" else "allowed")
    assert snapshot(engine, e.id) == before
    # the entity is usable afterwards: the failure left no half-applied in-memory state
    hooks.allow, hooks.audit_error = True, None
    engine.fire(e.id, "flip")
    assert engine.get(e.id).state != before[0]
    assert engine.verify() == []


def test_guard_that_says_no_keeps_the_state(engine: Engine, hooks: Hooks) -> None:
    e = engine.create("toggle")
    hooks.allow = False
    out = engine.fire(e.id, "flip")
    assert not out.changed and engine.get(e.id).state == "OFF"
    hooks.allow = True
    assert engine.fire(e.id, "flip").state == "ON"


def test_batch_isolates_failures_per_event(engine: Engine, hooks: Hooks) -> None:
    good, bad, conflicted, boom = (engine.create("service") for _ in range(4))
    t = engine.create("toggle")
    hooks.allow = RuntimeError("no")
    result = engine.apply(
        [
            Event(good.id, "job_pending"),
            Event(bad.id, "ping_ok"),  # not allowed in SUBMITTED
            Event(conflicted.id, "job_pending", expected_version=99),
            Event("missing", "job_pending"),
            Event(t.id, "flip"),  # guard raises
            Event(boom.id, "job_pending", payload={"x": object()}),  # not JSON
            Event(good.id, "job_running"),  # second event for the same entity
        ]
    )
    kinds = [type(o.error).__name__ if o.error else o.state for o in result.outcomes]
    assert kinds == [
        "PENDING",
        "InvalidEvent",
        "VersionConflict",
        "EntityNotFound",
        "CallbackError",
        "InvalidInput",
        "STARTING",
    ]
    assert engine.get(good.id).state == "STARTING"
    assert [h.seq for h in engine.history(good.id)] == [1, 2]
    for untouched in (bad, conflicted, boom, t):
        assert engine.get(untouched.id).version == 1
        assert engine.history(untouched.id) == []
    assert engine.verify() == []


def test_secrets_in_payloads_never_reach_history(engine: Engine) -> None:
    s = engine.create("service")
    payload = {
        "password": "hunter2",
        "nested": {"apiKey": "k", "clientSecret": "s", "ok": 1},
        "items": [{"token": "t"}],
        "note": "kept",
    }
    engine.fire(s.id, "job_pending", payload)
    [t] = engine.history(s.id)
    assert t.payload == {
        "password": "***",
        "nested": {"apiKey": "***", "clientSecret": "***", "ok": 1},
        "items": [{"token": "***"}],
        "note": "kept",
    }
    with engine.store.reading() as conn:
        raw = conn.execute(text("SELECT payload FROM transition")).scalar_one()
    assert "hunter2" not in str(raw)


def test_event_data_is_merged_into_the_entity(engine: Engine) -> None:
    s = engine.create("service", {"job_id": None, "user": "ann"})
    engine.fire(s.id, "job_pending", data={"job_id": 42})
    assert engine.get(s.id).data == {"job_id": 42, "user": "ann"}
    out = engine.fire(s.id, "job_pending", data={"node": "n1"})  # no state change, data moves
    assert not out.changed and out.version == 3
    assert engine.get(s.id).data["node"] == "n1"


def test_time_limit_counts_from_entering_the_state(engine: Engine, clock: ManualClock) -> None:
    s = engine.create("service")
    engine.fire(s.id, "job_pending")
    clock.advance(3600)  # a long time in the queue must not eat into STARTING's limit
    engine.fire(s.id, "job_running")
    limit = engine.lifecycle("service").states["STARTING"].time_limit
    assert limit is not None
    entered = engine.get(s.id).state_entered_at
    assert engine.get(s.id).deadline_at == entered + timedelta(seconds=limit)
    clock.advance(limit - 1)
    assert engine.fire(s.id, "ping_failed").state == "STARTING"
    clock.advance(1)
    assert engine.fire(s.id, "ping_failed").state == "TIMEOUT"


def test_per_entity_time_limit_override(engine: Engine, clock: ManualClock) -> None:
    op = engine.create("operation", {"time_limits": {"RUNNING": 5}})
    engine.fire(op.id, "start")
    got = engine.get(op.id)
    assert got.deadline_at == got.state_entered_at + timedelta(seconds=5)


def test_state_at_replays_history(engine: Engine, clock: ManualClock) -> None:
    s = engine.create("service")
    t0 = clock()
    clock.advance(10)
    engine.fire(s.id, "job_pending")
    clock.advance(10)
    engine.fire(s.id, "job_running")
    assert engine.state_at(s.id, t0 - timedelta(seconds=1)) is None
    assert engine.state_at(s.id, t0 + timedelta(seconds=5)) == "SUBMITTED"
    assert engine.state_at(s.id, t0 + timedelta(seconds=15)) == "PENDING"
    assert engine.state_at(s.id, clock()) == "STARTING"


def test_listeners_see_committed_transitions_only(engine: Engine) -> None:
    seen: list[str] = []
    engine.subscribe(lambda ts: seen.extend(f"{t.from_state}->{t.to_state}" for t in ts))
    s = engine.create("service")
    engine.fire(s.id, "job_pending")
    with pytest.raises(InvalidEvent):
        engine.fire(s.id, "ping_ok")
    engine.fire(s.id, "job_pending")
    assert seen == ["SUBMITTED->PENDING"]


def test_create_many_is_all_or_nothing(engine: Engine) -> None:
    engine.create("service", id="dup")
    with pytest.raises(FsmError):
        engine.create_many([NewEntity("service", id="a1"), NewEntity("nope", id="a2")])
    with pytest.raises(Exception, match="dup"):
        engine.create_many([NewEntity("service", id="b1"), NewEntity("service", id="dup")])
    assert {e.id for e in engine.list_entities()} == {"dup"}


def test_unknown_entity_is_a_typed_error(engine: Engine) -> None:
    with pytest.raises(EntityNotFound):
        engine.fire("nope", "stop")
    with pytest.raises(EntityNotFound):
        engine.history("nope")


def test_naive_times_are_refused(engine: Engine) -> None:
    from datetime import datetime

    s = engine.create("service")
    with pytest.raises(FsmError, match="timezone"):
        engine.fire(s.id, "job_pending", observed_at=datetime(2026, 1, 1))
    assert engine.get(s.id).version == 1
