"""Every statement the product runs on SQLite is answered from an index, never a full table scan.

The statements are not listed here: they are captured from the real code paths (engine, worker,
queue, releases, commands, web pages, moves, profiles, supervision, verify) through SQLite's own
trace hook, which also sees the hot path's statements that bypass SQLAlchemy. Each distinct
statement is then run through EXPLAIN QUERY PLAN with its own parameters; a new query that
needs an unindexed scan fails here.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from backends.sim import SimBackend, populate
from fsm import Engine, Event, ManualClock, NewEntity
from fsm.worker import Worker
from storage import Store, command_admin, moves, pages, profiles, queue, releases, supervisors
from storage.pages import SORTS, EntityQuery, Mark

TABLES = {"entity", "transition", "scheduled_command", "release_obligation"}
_SCAN = re.compile(r"SCAN (\w+)(?: AS \w+)?")
_LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")
_DML = ("SELECT", "UPDATE", "DELETE", "WITH", "INSERT")


def shape(sql: str) -> str:
    """The statement with its literals blanked: one plan check per distinct statement."""
    return re.sub(r"\?(?:\s*,\s*\?)+", "?", _LITERAL.sub("?", " ".join(sql.split())))


def full_scans(db: Path, sql: str) -> list[str]:
    """The plan lines of `sql` that read a product table without any index."""
    with sqlite3.connect(db) as conn:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    found = []
    for *_ids, detail in plan:
        matched = _SCAN.fullmatch(detail)
        if matched is not None and matched.group(1) in TABLES:
            found.append(detail)
    return found


def allowed_scan(sql: str) -> bool:
    """A substring search (`LIKE '%x%'`) must read every row: no index can answer it."""
    return " LIKE " in sql.upper()


class Capture:
    """Every statement SQLite runs on the store's connections, parameters expanded."""

    def __init__(self) -> None:
        self.statements: dict[str, str] = {}  # shape -> first expanded statement

    def __call__(self, sql: str) -> None:
        if sql.lstrip().upper().startswith(_DML):
            self.statements.setdefault(shape(sql), sql)

    def attach(self, store: Store) -> None:
        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.set_trace_callback(self)

        event.listen(store.engine, "connect", on_connect)
        store.engine.dispose()  # connections made before the hook get replaced


def _exercise(engine: Engine, clock: ManualClock) -> None:
    """Drive every read and write path the product has, on a small but varied database."""
    sim = SimBackend(3)
    populate(engine, sim, services=30, hosts=2, operations=2, stop_every=4)
    parent = engine.create("service", id="parent-1", profile="laptop")
    engine.create_many(
        [NewEntity("service", {}, f"child-{i}", "parent-1", "laptop") for i in range(3)]
    )
    worker = Worker(engine, [sim])
    for _ in range(40):
        worker.tick()
        clock.advance(0.5)
    worker.schedule(parent.id, "stop", delay=5)
    engine.apply([Event(f"child-{i}", "job_pending") for i in range(3)])
    engine.apply([Event("child-0", "job_pending", {"why": "again"}, data={"k": 1})])
    store, now = engine.store, engine.now()
    ids = [e.id for e in engine.list_entities()]
    later = worker.schedule(parent.id, "stop", delay=60)
    with store.transaction() as uow:
        queue.claim_due(uow, "w2", now, now + timedelta(seconds=5), 10, ["service"])
        queue.due_deadlines(uow, now, 10, ["service"], now)
        queue.pull_refresh(uow, ids[:2], now)
        queue.release_leases(uow, "w2")
        queue.open_work(uow)
        queue.list_commands(uow, ids[0])
        done = queue.claim_commands(uow, "w2", now + timedelta(hours=1), now, 5)
        for command in done:
            queue.complete_command(uow, command.id, "w2", now, "ok")
        releases.request(uow, [("child-1", "STOPPED"), ("child-2", "STOPPED")], now)
        for row in releases.claim(uow, "w2", now, now + timedelta(seconds=5), 5, ["service"]):
            releases.finish(uow, row.entity_id, "w2", now, error="busy", retry_at=now)
        releases.open_count(uow, ["service"])
        command_admin.cancel_command(uow, later, now)
        command_admin.get_command(uow, 1)
    command_admin.list_commands(store, parent.id, pending=True)
    command_admin.list_commands(store)
    supervisors.open_entities(store, "service", 10)
    profiles.count_by_profile(store)
    engine.verify()
    engine.counts()
    engine.history(ids[0])
    engine.state_at(ids[0], now)
    engine.list_entities(lifecycle="service", state="HEALTHY", parent_id="parent-1", limit=5)
    store.transitions_since(now - timedelta(hours=1))
    with store.reading() as conn:
        releases.pending(conn)
        releases.for_entity(conn, "child-1")
        for sort in SORTS:
            for descending in (False, True):
                query = EntityQuery(sort=sort, descending=descending, limit=5)
                page = pages.entity_page(conn, query)
                after = EntityQuery(
                    sort=sort, descending=descending, limit=5, after=page.next_cursor
                )
                pages.entity_page(conn, after)
        for query in (
            EntityQuery(lifecycle="service", state="HEALTHY"),
            EntityQuery(lifecycle="service", sort="updated_at"),
            EntityQuery(profile="laptop"),
            EntityQuery(parent_id="parent-1"),
            EntityQuery(entity_id=ids[0]),
        ):
            pages.entity_page(conn, query)
            pages.count_matching(conn, query)
        pages.state_attention(conn, now, now - timedelta(seconds=30))
        pages.leases_by_worker(conn, now)
        pages.scheduled_commands(conn, parent.id, pending_only=True)
        pages.entity_row(conn, ids[0])
        pages.history_rows(conn, ids[0])
        pages.scheduled_command(conn, 1)
        pages.children(conn, "parent-1")
        mark = pages.latest_mark(conn) or Mark(now, "", 0)
        pages.transitions_after(conn, Mark(now - timedelta(hours=1), "", 0), EntityQuery())
        pages.transitions_after(conn, mark, EntityQuery(lifecycle="service", state="HEALTHY"))
        moves.fired_moves(conn, now - timedelta(hours=1), now)
        moves.fired_moves(conn, None)
        moves.moves_by_minute(conn, now - timedelta(hours=1), now)
        moves.moves_since(conn, now - timedelta(hours=1))


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Capture]]:
    db = tmp_path_factory.mktemp("plans") / "plans.db"
    store = Store(f"sqlite:///{db}")
    capture = Capture()
    capture.attach(store)
    clock = ManualClock()
    engine = Engine(store, clock=clock, refresh_scale=0.05)
    _exercise(engine, clock)
    engine.close()
    yield db, capture


# the product queries named in the schema's migrations: each must have been seen, so the
# capture cannot pass by seeing nothing
EXPECTED = {
    "history by entity in order": "WHERE transition.entity_id = ? ORDER BY transition.seq",
    "due entities by next refresh": "WHERE next_refresh_at <= ?",
    "counts by lifecycle and state": "GROUP BY entity.lifecycle, entity.state",
    "deadlines": "WHERE deadline_at <= ?",
    "leases by owner": "WHERE lease_owner = ?",
    "leases by worker": "entity.lease_owner IS NOT NULL",
    "pending commands": "scheduled_command.done_at IS NULL",
    "pending releases": "release_obligation.released_at IS NULL",
    "children by parent": "entity.parent_id = ?",
    "counts by profile": "entity.profile IS NOT NULL",
    "hot path: entity heads": "UPDATE entity SET state = ?",
    "hot path: rows by id": "FROM entity WHERE id IN (?)",
    "moves in a window": "transition.recorded_at >= ?",
}


def test_every_product_query_was_captured(captured: tuple[Path, Capture]) -> None:
    _db, capture = captured
    missing = [
        name
        for name, needle in EXPECTED.items()
        if not any(needle in statement for statement in capture.statements)
    ]
    assert missing == []


def test_no_product_query_scans_a_table_without_an_index(
    captured: tuple[Path, Capture],
) -> None:
    db, capture = captured
    offenders = {
        statement: scans
        for statement in capture.statements.values()
        if (scans := full_scans(db, statement)) and not allowed_scan(statement)
    }
    assert offenders == {}


def test_the_check_sees_an_unindexed_query(captured: tuple[Path, Capture]) -> None:
    db, _capture = captured
    assert full_scans(db, "SELECT * FROM entity WHERE data = '{}'") == ["SCAN entity"]
    assert full_scans(db, "SELECT * FROM transition WHERE event = 'stop'") == ["SCAN transition"]
    assert full_scans(db, "SELECT id FROM entity WHERE next_refresh_at <= '2026'") == []
