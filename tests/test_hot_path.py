"""The lean batch path: per batch, each distinct time is parsed and formatted once, a payload is
serialised once, an event costs one lookup of (state, trigger), and the leaner records are
exactly the ones the plain per-row code builds. Counts of calls, never timings."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm import Engine, Event, ManualClock, NewEntity
from fsm.lifecycle import Lifecycle
from fsm.staging import Head
from storage import EntityRow, EntityUpdate, TransitionRow, hotsql
from storage.hotsql import HotSql

N = 60


class Counted:
    """A converter that counts its calls."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.calls = 0

    def __call__(self, value: Any) -> Any:
        self.calls += 1
        return self.fn(value)


def _engine(tmp_path: Any) -> tuple[Engine, list[str]]:
    engine = Engine(f"sqlite:///{tmp_path}/hot.db", clock=ManualClock())
    rows = engine.create_many([NewEntity("service", {"n": i}) for i in range(N)])
    return engine, [r.id for r in rows]


def _count(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> dict[str, Counted]:
    hot = engine.store._hot
    counters = {
        "time_in": Counted(hot.codec.time_in),
        "time_out": Counted(hot.codec.time_out),
        "json_out": Counted(hot.codec.json_out),
    }
    monkeypatch.setattr(hot, "codec", dataclasses.replace(hot.codec, **counters))
    return counters


def test_a_batch_parses_and_formats_each_distinct_time_once(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, ids = _engine(tmp_path)
    counters = _count(engine, monkeypatch)
    result = engine.apply([Event(i, "job_pending") for i in ids])
    assert all(o.transition is not None for o in result.outcomes)
    # the rows share their stamps (one create_many, one `now`): a handful of distinct texts and
    # times, where the per-row code parsed 7 and formatted 6 per entity
    assert 1 <= counters["time_in"].calls <= 3
    assert 1 <= counters["time_out"].calls <= 4
    stored = engine.history(ids[0])[0]
    assert stored.recorded_at == stored.observed_at == engine.now()
    assert engine.verify() == []


def test_a_payload_is_serialised_once_and_an_empty_one_never(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, ids = _engine(tmp_path)
    counters = _count(engine, monkeypatch)
    half = N // 2
    engine.apply(
        [Event(i, "job_pending", {"k": k} if k < half else None) for k, i in enumerate(ids)]
    )
    assert counters["json_out"].calls == half
    assert [engine.history(i)[0].payload for i in ids[:2]] == [{"k": 0}, {"k": 1}]


def test_an_event_costs_one_lookup_not_candidates_then_choose(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, ids = _engine(tmp_path)

    def refused(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the hot path looked the transition up a second time")

    monkeypatch.setattr(Lifecycle, "candidates", refused)
    monkeypatch.setattr(Lifecycle, "choose", refused)
    result = engine.apply([Event(i, "job_pending") for i in ids] + [Event(ids[0], "nonsense")])
    assert sum(o.transition is not None for o in result.outcomes) == N
    assert type(result.outcomes[-1].error).__name__ == "InvalidEvent"


def test_pairs_hold_exactly_the_candidates_of_every_state_and_trigger() -> None:
    engine = Engine("sqlite://", migrate=True)
    for lifecycle in engine.lifecycles.values():
        triggers = {t for ts in lifecycle.allowed.values() for t in ts} | {"nonsense"}
        for state in lifecycle.states:
            for trigger in triggers:
                by_source = lifecycle._table.get(trigger, {})
                assert lifecycle.pairs.get((state, trigger)) == by_source.get(state)
    engine.close()


_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(_times, st.none() | _times, st.booleans()), min_size=1, max_size=8))
def test_batch_records_equal_the_per_row_ones(rows: list[tuple[datetime, Any, bool]]) -> None:
    hot = HotSql("sqlite")
    out = hot.codec.time_out
    stored = []
    for n, (at, maybe, flag) in enumerate(rows):
        entity = EntityRow(
            f"e{n}", "service", "v1", "S", flag, n, n, at, maybe, at, maybe or at, at, None, maybe
        )
        params = hot.entity_params(entity)
        stored.append(params)
        update = Head(entity).update(at + timedelta(seconds=n))
        assert update == EntityUpdate(
            id=entity.id,
            expected_version=entity.version,
            state=entity.state,
            terminal=entity.terminal,
            version=entity.version,
            seq=entity.seq,
            state_entered_at=entity.state_entered_at,
            deadline_at=entity.deadline_at,
            next_refresh_at=entity.next_refresh_at,
            updated_at=at + timedelta(seconds=n),
            definition_version=entity.definition_version,
        )
        assert hot.update_params(update, hot.batch_time_out(3)) == hot.update_params(update)
        assert out(at) is not None
    assert hot.entities_from(stored) == [hot.entity_from(v) for v in stored]


_json = st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3), max_size=2)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["sqlite", "postgresql"]),
    _times,
    st.none() | _times,
    st.none() | _times,
    st.none() | _json,
    _json,
)
def test_parameters_follow_the_statements_columns(
    dialect: str,
    at: datetime,
    deadline: datetime | None,
    refresh: datetime | None,
    data: Any,
    payload: dict[str, Any],
) -> None:
    # built by column name from the statements' own column lists: the positional fast paths
    # (PostgreSQL passes datetimes through untouched) must put every value where its column is
    hot = HotSql(dialect)
    c = hot.codec

    def value(name: str, v: Any) -> Any:
        if isinstance(v, datetime) or (v is None and name.endswith("_at")):
            return c.time_out(v)
        return v

    later = at + timedelta(seconds=1)
    update = EntityUpdate("e1", 3, "S", True, 4, 5, at, deadline, refresh, later, "v2", data)
    want = [value(n, getattr(update, n)) for n in hotsql._HEAD_COLUMNS]
    if data is not None:
        want.append(c.json_out(data))
    for out in (None, hot.batch_time_out(10)):
        assert hot.update_params(update, out) == (*want, "e1", 3)
    row = TransitionRow("e1", 5, "A", "B", "go", "user", payload, at, later, "v2")
    expected = [
        (c.json_out(payload) if payload else "{}") if n == "payload" else value(n, getattr(row, n))
        for n in hotsql.TRANSITION_COLUMNS
    ]
    for out in (None, hot.batch_time_out(10)):
        assert hot.transition_params(row, out) == tuple(expected)
