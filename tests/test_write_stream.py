"""A batch whose writes stream to PostgreSQL while it is decided ends exactly as one that does not.

On PostgreSQL, `Engine.apply` sends each part's transitions and final heads before deciding the
next part (storage.write_stream); SQLite writes everything at the end. Whatever the batch (an
entity's several events, refused and unknown events, data merges, stale expected versions,
parents and children), both must give the same outcomes, heads and histories.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm import Engine, Event, ManualClock, NewEntity
from fsm.part_stream import STREAM_PART as _STREAM_PART
from storage import (
    DatabaseUnavailable,
    EntityUpdate,
    StorageError,
    TransitionRow,
    VersionConflict,
)
from storage.write_stream import WriteStream

pytestmark = pytest.mark.postgres

NAMES = ["job_pending", "job_running", "ping_ok", "ping_failed", "job_failed", "stop", "nope"]
NAMES += ["start", "succeed", "fail", "running"]  # an operation's, and its host's
event_specs = st.tuples(
    st.integers(-1, 11),  # which entity (-1: one that does not exist, 11: a refused id)
    st.sampled_from(NAMES),
    st.none() | st.dictionaries(st.sampled_from("abc"), st.integers(0, 3), max_size=2),
    st.none() | st.integers(0, 4),  # expected version
)
batches = st.lists(event_specs, min_size=_STREAM_PART + 1, max_size=3 * _STREAM_PART + 7)


@pytest.fixture
def pair(sqlite_url: str, pg_url: str) -> Iterator[tuple[Engine, Engine]]:
    start = ManualClock()()
    lite = Engine(sqlite_url, clock=ManualClock(start))
    pg = Engine(pg_url, clock=ManualClock(start))
    yield lite, pg
    lite.close()
    pg.close()


def _events(specs: list[tuple[int, str, Any, Any]], prefix: str) -> list[Event]:
    def entity(i: int) -> str:
        return f"{prefix}-gone" if i == -1 else "" if i == 11 else f"{prefix}-{i}"

    return [Event(entity(i), name, data=data, expected_version=v) for i, name, data, v in specs]


def _seen(engine: Engine, events: list[Event], prefix: str) -> tuple[Any, ...]:
    outcomes = [
        (
            o.state,
            o.version,
            o.held,
            type(o.error).__name__ if o.error else None,
            o.transition[:7] if o.transition else None,
        )
        for o in engine.apply(events).outcomes
    ]
    ids = [f"{prefix}-{i}" for i in range(11)]
    heads = [
        (r.state, r.version, r.seq, r.data, r.next_refresh_at, r.deadline_at, r.updated_at)
        for r in (engine.get(i) for i in ids)
    ]
    histories = {i: [t[:8] for t in h] for i, h in engine.store.histories(ids).items()}
    return outcomes, heads, histories


def test_a_streamed_batch_ends_as_an_unstreamed_one(pair: tuple[Engine, Engine]) -> None:
    lite, pg = pair
    made = iter(range(10**6))
    parts: list[int] = []
    send = WriteStream.send

    def counted(self: WriteStream, *args: Any) -> None:
        parts.append(1)
        send(self, *args)

    @settings(max_examples=25, deadline=None)
    @given(batches, st.booleans())
    def one(specs: list[tuple[int, str, Any, Any]], children: bool) -> None:
        prefix = f"e{next(made)}"
        for engine in (lite, pg):
            if children:  # a host and its operation: a finished child moves the host
                host, op = f"{prefix}-0", f"{prefix}-1"
                engine.create("host", id=host)
                engine.create("operation", {"command": "provision"}, id=op, parent_id=host)
                engine.fire(host, "provision", {"operation": op}, data={"operation": op})
            engine.create_many(
                NewEntity("service", id=f"{prefix}-{i}") for i in range(2 if children else 0, 11)
            )
        parts.clear()
        assert _seen(pg, _events(specs, prefix), prefix) == _seen(
            lite, _events(specs, prefix), prefix
        )
        # without children the batch streamed, a part at a time and the rest at the end
        assert len(parts) == (0 if children else len(specs) // _STREAM_PART + 1)

    WriteStream.send = counted  # type: ignore[method-assign]
    try:
        one()
    finally:
        WriteStream.send = send  # type: ignore[method-assign]


def test_a_child_finishing_late_in_a_batch_moves_its_parent(pair: tuple[Engine, Engine]) -> None:
    """The parent's only event comes first, its child's end a part later: the parent's head
    changes after its last event of its own, so it may not be written before the end."""
    seen = []
    for engine in pair:
        engine.create("host", id="h")
        engine.create("operation", {"command": "provision"}, id="op", parent_id="h")
        engine.fire("h", "provision", {"operation": "op"}, data={"operation": "op"})
        engine.fire("op", "start")
        services = engine.create_many(NewEntity("service") for _ in range(2 * _STREAM_PART))
        batch = [Event("h", "nope"), *(Event(r.id, "job_pending") for r in services)]
        batch.insert(_STREAM_PART + 10, Event("op", "succeed"))
        engine.apply(batch)
        seen.append((engine.get("h").state, [t.event for t in engine.history("h")]))
        assert engine.verify() == []
    assert seen[0] == seen[1] == ("RUNNING", ["provision", "operation_succeeded"])


def _update(row: Any, expected: int) -> EntityUpdate:
    return EntityUpdate(
        row.id, expected, "PENDING", False, row.version + 1, row.seq + 1,
        row.state_entered_at, None, None, row.updated_at, row.definition_version,
    )  # fmt: skip


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = Engine(pg_url)
    yield engine
    engine.close()


def test_a_stale_update_in_a_stream_is_a_conflict_and_nothing_is_written(engine: Engine) -> None:
    rows = engine.create_many(NewEntity("service") for _ in range(3))
    with (
        pytest.raises(VersionConflict),
        engine.store.transaction() as uow,
        uow.stream() as stream,
    ):
        stream.send([_update(rows[0], rows[0].version)], [])
        stream.send([_update(rows[1], rows[1].version + 7)], [])  # stale
        stream.send([_update(rows[2], rows[2].version)], [])
    assert [engine.get(r.id) for r in rows] == rows


def test_a_failing_statement_in_a_stream_is_a_storage_error_and_rolls_back(engine: Engine) -> None:
    row = engine.create("service")
    engine.fire(row.id, "job_pending")
    before = engine.get(row.id)
    taken = engine.history(row.id)[0]
    again = TransitionRow(row.id, taken.seq, *taken[2:])  # the same (entity, seq) key
    with (
        pytest.raises(StorageError),
        engine.store.transaction() as uow,
        uow.stream() as stream,
    ):
        stream.send([_update(before, before.version)], [])
        stream.send([], [again])
    assert engine.get(row.id) == before
    assert engine.history(row.id) == [taken]


def test_a_connection_killed_mid_stream_fails_the_batch_and_the_next_one_works(
    engine: Engine, pg_server: str
) -> None:
    rows = engine.create_many(NewEntity("service") for _ in range(2 * _STREAM_PART))
    with (
        pytest.raises(DatabaseUnavailable),
        engine.store.transaction() as uow,
        uow.stream() as stream,
    ):
        stream.send([_update(rows[0], rows[0].version)], [])
        pid = uow.connection.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]
        with psycopg.connect(pg_server, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        stream.send([_update(rows[1], rows[1].version)], [])
    assert [engine.get(r.id) for r in rows[:2]] == rows[:2]
    result = engine.apply([Event(r.id, "job_pending") for r in rows])
    assert {o.state for o in result.outcomes} == {"PENDING"}
    assert engine.verify() == []
