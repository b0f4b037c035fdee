"""Issue 8, items 5 and 14: every field is validated before anything is written, with the same
limits on SQLite and PostgreSQL, a typed error per event, and the other events committed."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fsm import (
    Engine,
    EntityNotFound,
    Event,
    FsmError,
    InvalidEvent,
    ManualClock,
    NewEntity,
    Worker,
)
from fsm.definition import MAX_SECONDS
from fsm.errors import UnknownLifecycle
from tests.hardening_support import flip_engine


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


def _invalid(error: BaseException | None, field: str) -> None:
    """The error is the engine's typed one and names the field."""
    assert error is not None
    assert type(error).__name__ == "InvalidInput", repr(error)
    assert isinstance(error, FsmError) and isinstance(error, ValueError)
    assert field in str(error)


BAD_EVENTS = [
    pytest.param({"source": "s" * 201}, "source", id="source-201-chars"),
    pytest.param({"source": "\x00"}, "source", id="source-nul"),
    pytest.param({"source": 7}, "source", id="source-not-text"),
    pytest.param({"source": []}, "source", id="source-unhashable"),
    pytest.param({"payload": _deep(900)}, "payload", id="payload-900-deep"),
    pytest.param({"payload": {"x": {1, 2}}}, "payload.x", id="payload-set"),
    pytest.param({"payload": {"x": math.nan}}, "payload.x", id="payload-nan"),
    pytest.param({"payload": {"x": "\ud800"}}, "payload.x", id="payload-lone-surrogate"),
    pytest.param({"payload": {1: "x"}}, "payload", id="payload-int-key"),
    pytest.param({"payload": {"n": 10**400}}, "payload.n", id="payload-huge-int"),
    pytest.param({"payload": ["x"]}, "payload", id="payload-not-mapping"),
    pytest.param({"data": ["x"]}, "data", id="data-list"),
    pytest.param({"data": {"t": datetime(2026, 1, 1, tzinfo=UTC)}}, "data.t", id="data-datetime"),
    pytest.param(
        {"observed_at": datetime(9999, 12, 31, 23, 59, tzinfo=UTC)},
        "observed_at",
        id="observed-9999",
    ),
    pytest.param({"observed_at": datetime(1, 1, 1, tzinfo=UTC)}, "observed_at", id="observed-1"),
    pytest.param({"observed_at": datetime(2026, 1, 1)}, "observed_at", id="observed-naive"),
    pytest.param({"observed_at": "2026-01-01T00:00:00Z"}, "observed_at", id="observed-text"),
    pytest.param({"expected_version": "1"}, "expected_version", id="version-text"),
    pytest.param({"expected_version": 1.0}, "expected_version", id="version-float"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_EVENTS)
def test_one_bad_event_does_not_lose_the_batch(
    engine: Engine, fields: dict[str, Any], field: str
) -> None:
    before, bad, after = (engine.create("service") for _ in range(3))
    event = Event(bad.id, "job_pending")._replace(**fields)
    result = engine.apply([Event(before.id, "job_pending"), event, Event(after.id, "job_pending")])
    first, refused, last = result.outcomes
    assert first.state == "PENDING" and last.state == "PENDING"
    _invalid(refused.error, field)
    assert [t.seq for t in engine.history(before.id)] == [1]
    assert [t.seq for t in engine.history(after.id)] == [1]
    untouched = engine.get(bad.id)
    assert (untouched.version, untouched.state, engine.history(bad.id)) == (1, "SUBMITTED", [])
    assert engine.verify() == []


@pytest.mark.parametrize(
    ("entity_id", "field"),
    [("\x00", "entity_id"), ("i" * 201, "entity_id"), (123, "entity_id"), (None, "entity_id")],
)
def test_bad_entity_ids_are_per_event_errors(engine: Engine, entity_id: Any, field: str) -> None:
    good = engine.create("service")
    result = engine.apply([Event(entity_id, "job_pending"), Event(good.id, "job_pending")])
    _invalid(result.outcomes[0].error, field)
    assert result.outcomes[1].state == "PENDING"
    with pytest.raises(FsmError):
        engine.fire(entity_id, "job_pending")


@pytest.mark.parametrize("name", [None, ["job_pending"], {"x": 1}, 3])
def test_event_names_that_are_not_text_are_typed(engine: Engine, name: Any) -> None:
    s = engine.create("service")
    outcome = engine.apply([Event(s.id, name)]).outcomes[0]
    _invalid(outcome.error, "event")
    assert engine.get(s.id).version == 1


@pytest.mark.parametrize("name", ["", "\x00", "e" * 201, "job_pending\x00"])
def test_event_names_that_are_no_trigger_are_refused(engine: Engine, name: Any) -> None:
    s = engine.create("service")
    outcome = engine.apply([Event(s.id, name), Event(s.id, "job_pending")]).outcomes
    assert isinstance(outcome[0].error, InvalidEvent)
    assert outcome[1].state == "PENDING" and len(engine.history(s.id)) == 1


def test_not_an_event_is_refused_alone(engine: Engine) -> None:
    s = engine.create("service")
    result = engine.apply([(s.id, "job_pending", None, "user"), Event(s.id, "job_pending")])  # type: ignore[list-item]
    _invalid(result.outcomes[0].error, "event")
    assert result.outcomes[1].state == "PENDING"


def test_the_same_limits_on_both_databases(engine: Engine) -> None:
    """200 characters fit in every text column on both; 201 fit in none (SQLite does not
    enforce VARCHAR widths: the engine does, for both)."""
    s = engine.create("service", id="i" * 200)
    assert engine.fire(s.id, "job_pending", source="s" * 200).state == "PENDING"
    with pytest.raises(FsmError, match="source"):
        engine.fire(s.id, "job_running", source="s" * 201)
    with pytest.raises(FsmError, match="entity id"):
        engine.create("service", id="i" * 201)
    assert engine.get(s.id).state == "PENDING"
    nested = _deep(30)  # 32 levels with the payload and the innermost mapping
    with pytest.raises(FsmError, match="deeper than 32"):
        engine.fire(s.id, "job_running", {"deep": {"one more": nested}})
    assert engine.fire(s.id, "job_running", {"deep": nested}).state == "STARTING"
    assert engine.history(s.id)[-1].payload == {"deep": nested}


@pytest.mark.parametrize(
    ("item", "field"),
    [
        pytest.param(NewEntity("service", ["x"]), "entity data", id="data-list"),  # type: ignore[arg-type]
        pytest.param(NewEntity("service", {"a": _deep(200)}), "entity data", id="data-deep"),
        pytest.param(NewEntity("service", {"a": math.inf}), "entity data.a", id="data-inf"),
        pytest.param(NewEntity("service", {}, "\x00"), "entity id", id="id-nul"),
        pytest.param(NewEntity("service", {}, "x" * 201), "entity id", id="id-long"),
        pytest.param(NewEntity("service", {}, "ok", "p\x00"), "parent_id", id="parent-nul"),
    ],
)
def test_create_many_writes_nothing_on_a_bad_item(
    engine: Engine, item: NewEntity, field: str
) -> None:
    with pytest.raises(FsmError) as raised:
        engine.create_many([NewEntity("service", {}, "fine"), item])
    _invalid(raised.value, field)
    assert engine.list_entities() == []


def test_create_refuses_unknown_lifecycles_and_parents(engine: Engine) -> None:
    with pytest.raises(UnknownLifecycle):
        engine.create(["service"])  # type: ignore[arg-type]
    with pytest.raises(EntityNotFound, match="nobody"):
        engine.create("operation", parent_id="nobody")
    assert engine.list_entities() == []
    host = engine.create("host", id="h")
    assert engine.create("operation", parent_id=host.id).parent_id == "h"


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.get(123),
        lambda e: e.get("\x00"),
        lambda e: e.history(None),
        lambda e: e.list_entities(limit=-1),
        lambda e: e.list_entities(limit="10"),
        lambda e: e.list_entities(state="\x00"),
        lambda e: e.state_at("x", datetime(2026, 1, 1)),
        lambda e: e.state_at("x", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
    ],
)
def test_reads_validate_their_arguments(engine: Engine, call: Any) -> None:
    with pytest.raises(FsmError) as raised:
        call(engine)
    assert type(raised.value).__name__ == "InvalidInput"


@pytest.mark.parametrize(
    "options",
    [
        {"refresh_scale": math.nan},
        {"refresh_scale": math.inf},
        {"refresh_scale": 0},
        {"refresh_scale": -1.0},
        {"refresh_scale": True},
        {"refresh_scale": "1"},
        {"refresh_scale": 1e300},
        {"default_refresh": math.nan},
        {"default_refresh": 1e20},
        {"default_refresh": 0},
    ],
)
def test_engine_numbers_are_validated_before_opening(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    db = tmp_path / "fsm.db"
    with pytest.raises(FsmError) as raised:
        Engine(f"sqlite:///{db}", **options)
    assert type(raised.value).__name__ == "InvalidInput"
    assert not db.exists()  # refused before anything was created


def test_a_refresh_scale_cannot_push_times_out_of_range(db_url: str, clock: ManualClock) -> None:
    engine = flip_engine(db_url, clock=clock, default_refresh=MAX_SECONDS, refresh_scale=1e6)
    try:
        e = engine.create("flip")
        assert engine.fire(e.id, "flip").state == "OFF"
        due = engine.get(e.id).next_refresh_at
        assert due is not None and due - clock.now <= timedelta(seconds=MAX_SECONDS)
    finally:
        engine.close()


def test_a_clock_that_returns_garbage_is_refused(db_url: str) -> None:
    engine = Engine(db_url, clock=lambda: datetime(2026, 1, 1))
    try:
        with pytest.raises(FsmError, match="clock"):
            engine.create("service")
        assert engine.list_entities() == []
    finally:
        engine.close()


@pytest.mark.parametrize(
    "arguments",
    [{"x": {1, 2}}, {"x": math.nan}, ["stop"], {"x": _deep(100)}, {1: "x"}],
)
def test_command_arguments_are_json_before_the_backend_acts(engine: Engine, arguments: Any) -> None:
    worker = Worker(engine, [])
    s = engine.create("service")
    with pytest.raises(FsmError) as raised:
        worker.command(s.id, "stop", arguments)
    assert type(raised.value).__name__ == "InvalidInput"
    with pytest.raises(FsmError) as raised:
        worker.schedule(s.id, "stop", arguments, delay=5)
    assert type(raised.value).__name__ == "InvalidInput"
    assert engine.get(s.id).state == "SUBMITTED"
    with engine.store.transaction() as uow:
        assert (
            uow.connection.exec_driver_sql("SELECT count(*) FROM scheduled_command").scalar() == 0
        )


@pytest.mark.parametrize(
    "when",
    [
        {"delay": math.nan},
        {"delay": math.inf},
        {"delay": 1e20},
        {"delay": 10**400},
        {"delay": -1},
        {"delay": "5"},
        {"at": datetime(2026, 1, 1)},
        {"at": datetime(9999, 12, 31, 23, 59, tzinfo=UTC)},
        {"at": "tomorrow"},
    ],
)
def test_schedule_times_are_validated(engine: Engine, when: dict[str, Any]) -> None:
    worker = Worker(engine, [])
    s = engine.create("service")
    with pytest.raises(FsmError) as raised:
        worker.schedule(s.id, "stop", **when)
    assert type(raised.value).__name__ == "InvalidInput"
