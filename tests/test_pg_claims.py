"""PostgreSQL claims and creation in one statement each (storage/claims.py, storage/inserts.py):
concurrent claimers never hold the same entity, and a batch with a taken id writes nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsm import DuplicateEntity, Engine, ManualClock, NewEntity
from storage import queue
from storage.store import UnitOfWork

ENTITIES = 240
pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[tuple[Engine, ManualClock]]:
    clock = ManualClock()
    engine = Engine(pg_url, clock=clock)
    engine.create_many(NewEntity("service", id=f"s-{i:04d}") for i in range(ENTITIES))
    clock.advance(3600)  # every service is due
    yield engine, clock
    engine.close()


def _claim_all(
    engine: Engine, clock: ManualClock, batches: list[int], lease: float
) -> dict[str, list[str]]:
    """Each claimer (one thread, one connection) claims with its batch size until none is
    left for it; returns the ids each one got."""
    got: dict[str, list[str]] = {f"w{n}": [] for n in range(len(batches))}
    start = threading.Barrier(len(batches))
    errors: list[BaseException] = []

    def run(owner: str, size: int) -> None:
        try:
            start.wait()
            while True:
                now = clock()
                with engine.store.transaction() as uow:
                    claims = queue.claim_due(uow, owner, now, now + timedelta(seconds=lease), size)
                if not claims:
                    return
                got[owner] += [c.entity.id for c in claims]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(o, b)) for o, b in zip(got, batches, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[0]
    return got


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=st.lists(st.integers(1, 60), min_size=2, max_size=4))
def test_concurrent_claimers_hold_disjoint_sets(
    pg_engine: tuple[Engine, ManualClock], batches: list[int]
) -> None:
    engine, clock = pg_engine
    clock.advance(3600)  # every lease of the previous example has expired
    got = _claim_all(engine, clock, batches, lease=600)
    claimed = [i for ids in got.values() for i in ids]
    assert len(claimed) == len(set(claimed)) == ENTITIES  # each entity once, none left out
    holder = {e.id: e.lease_owner for e in engine.list_entities()}
    assert all(holder[i] == owner for owner, ids in got.items() for i in ids)


def test_a_claim_reports_the_expired_owner_and_returns_due_order(
    pg_engine: tuple[Engine, ManualClock],
) -> None:
    engine, clock = pg_engine
    now = clock()
    with engine.store.transaction() as uow:
        first = queue.claim_due(uow, "dead", now, now + timedelta(seconds=5), 10)
    assert [c.previous_owner for c in first] == [None] * 10
    clock.advance(10)
    now = clock()
    with engine.store.transaction() as uow:
        again = queue.claim_due(uow, "alive", now, now + timedelta(seconds=60), ENTITIES)
    assert len(again) == ENTITIES
    previous = {c.entity.id: c.previous_owner for c in again}
    assert {i for i, p in previous.items() if p == "dead"} == {c.entity.id for c in first}
    due = [c.entity.next_refresh_at for c in again]
    assert due == sorted(due)  # type: ignore[type-var]
    assert {c.entity.lease_owner for c in again} == {"alive"}


def test_a_taken_id_writes_nothing_of_the_batch(pg_engine: tuple[Engine, ManualClock]) -> None:
    engine, _ = pg_engine
    fresh = [NewEntity("service", id=f"new-{i}") for i in range(50)]
    with pytest.raises(DuplicateEntity, match="s-0007"):
        engine.create_many([*fresh, NewEntity("service", id="s-0007")])
    assert engine.store.get_entity("new-0") is None and engine.store.get_entity("new-49") is None
    # inside a caller's transaction that catches the error: still nothing of the batch
    with engine.store.transaction() as uow:
        with pytest.raises(DuplicateEntity, match="s-0003"):
            engine.create_in(uow, [*fresh, NewEntity("service", id="s-0003")])
        engine.create_in(uow, [NewEntity("service", id="kept")])
    assert engine.store.get_entity("kept") is not None and engine.store.get_entity("new-10") is None
    assert len(engine.list_entities()) == ENTITIES + 1


def test_concurrent_creators_of_one_id_one_wins(pg_engine: tuple[Engine, ManualClock]) -> None:
    engine, _ = pg_engine
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def create(tag: str) -> None:
        start.wait()
        items = [NewEntity("service", id=f"{tag}-{i}") for i in range(100)]
        try:
            engine.create_many([*items, NewEntity("service", id="contested")])
            outcomes.append(tag)
        except DuplicateEntity:
            outcomes.append("duplicate")

    threads = [threading.Thread(target=create, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes)[0] in ("a", "b") and sorted(outcomes)[1] == "duplicate"
    loser = "b" if "a" in outcomes else "a"
    assert (
        engine.store.get_entity(f"{loser}-0") is None
        and engine.store.get_entity("contested") is not None
    )


def test_only_the_lease_commits_without_a_flush(pg_engine: tuple[Engine, ManualClock]) -> None:
    """The claim's transaction may commit without waiting for the WAL (a lost lease is only a
    row due again); no other transaction on that pooled connection may inherit it."""
    engine, clock = pg_engine

    def setting(uow: UnitOfWork) -> str:
        return str(uow.connection.exec_driver_sql("SHOW synchronous_commit").scalar())

    with engine.store.transaction() as uow:
        before = setting(uow)
        now = clock()
        claims = queue.claim_due(uow, "me", now, now + timedelta(seconds=30), 5)
        during = setting(uow)
    assert len(claims) == 5 and before != "off" and during == "off"
    engine.fire(claims[0].entity.id, "job_pending")  # a durable write on the same pool
    with engine.store.transaction() as uow:
        assert setting(uow) == before


def _claim_plan(uow: UnitOfWork, sql: str, params: Any) -> list[str]:
    found = uow.connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params).scalar()
    nodes, todo = [], [found[0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(f"{node['Node Type']} {node.get('Index Name', '')}".strip())
        todo += node.get("Plans", [])
    return nodes


@pytest.mark.parametrize("lifecycles", [None, ["service"]])
def test_a_claim_walks_the_due_index_even_on_stale_statistics(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, lifecycles: list[str] | None
) -> None:
    """Statistics taken when the table was nearly empty (before autovacuum's ANALYZE of what
    was added since) made the planner hash-join a full scan of the table to each batch; the
    claim must take its batch off the due index, in order, and join it back by key."""
    clock = ManualClock()
    engine = Engine(pg_url, clock=clock)
    try:
        with engine.store.transaction() as uow:
            uow.connection.exec_driver_sql("ALTER TABLE entity SET (autovacuum_enabled = off)")
        engine.create_many(NewEntity("service") for _ in range(10))
        with engine.store.transaction() as uow:
            uow.connection.exec_driver_sql("ANALYZE entity")
        for _ in range(4):
            engine.create_many(NewEntity("service") for _ in range(5000))
        clock.advance(3600)
        sent: list[tuple[str, Any]] = []
        execute = psycopg.Cursor.execute

        def record(cursor: Any, query: Any, params: Any = None, **kw: Any) -> Any:
            sent.append((str(query), params))
            return execute(cursor, query, params, **kw)

        monkeypatch.setattr(psycopg.Cursor, "execute", record)
        now = clock()
        with engine.store.transaction() as uow:
            claims = queue.claim_due(uow, "me", now, now + timedelta(seconds=30), 100, lifecycles)
            sql, params = next((q, p) for q, p in sent if "SKIP LOCKED" in q)
            hinted = _claim_plan(uow, sql, params)
        with engine.store.transaction() as uow:
            plain = _claim_plan(uow, sql, params)
        assert len(claims) == 100
        assert {"Index Scan ix_entity_next_refresh_at", "Index Scan entity_pkey"} <= set(hinted)
        astray = {"Seq Scan", "Sort", "Bitmap Heap Scan"}
        assert not astray & set(hinted), hinted
        # the scenario is real: without the claim's settings the planner does go astray
        assert astray & set(plain), plain
    finally:
        engine.close()
