"""Issue 12: every statement the engine and worker send to PostgreSQL stays on an index at 1M rows.

The statements are not listed by hand: they are recorded at the driver (psycopg's cursor, below
SQLAlchemy, since the hot path runs on the cursor itself) while real engine, worker and store
calls run against a small database; each one is then EXPLAINed, with the parameters it was sent
with, against a schema holding 1M entities and 1M transitions, both as the custom plan for those
values and as the generic plan a prepared statement may switch to. A new statement whose plan
reads a big table from end to end fails here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from backends.sim import SimBackend, populate
from fsm import DuplicateEntity, Engine, Event, ManualClock, NewEntity
from fsm.worker import Worker
from storage import queue, releases
from storage.hotsql import HotSql

pytestmark = pytest.mark.postgres

BIG = frozenset(("entity", "transition"))
#: 100k rows each here; their open rows (`done_at IS NULL`, `released_at IS NULL`) are found
#: through the pending-work partial indexes of migration 0006
QUEUES = frozenset(("scheduled_command", "release_obligation"))
ROWS = 1_000_000
_OURS = re.compile(r"\b(entity|transition|scheduled_command|release_obligation)\b")
_PARAM = re.compile(r"%\((\w+)\)s|%s")

_FILL = f"""
INSERT INTO entity SELECT
  'big-' || lpad(g::text, 7, '0'),
  (ARRAY['service','host','operation'])[1 + g % 3], 'v1',
  (ARRAY['PENDING','STARTING','HEALTHY','UNHEALTHY','STOPPED','FAILED','SUBMITTED','TIMEOUT'])
    [1 + g % 8],
  g % 8 IN (4, 5, 7), 3, 1,
  now() - g * interval '1 second',
  CASE WHEN g % 10 = 0 THEN now() + (g % 3600 - 60) * interval '1 second' END,
  CASE WHEN g % 8 NOT IN (4, 5, 7) THEN now() + (g % 600 - 20) * interval '1 second' END,
  now() - interval '1 day', now() - (g % 86400) * interval '1 second',
  CASE WHEN g % 200 = 0 THEN 'w-' || (g % 7) END,
  CASE WHEN g % 200 = 0 THEN now() + interval '30 seconds' END,
  0, '{{}}', CASE WHEN g % 50 = 0 THEN 'big-' || lpad((g - 1)::text, 7, '0') END,
  now() - (g % 600) * interval '1 second', NULL
FROM generate_series(1, {ROWS}) AS g;
INSERT INTO transition SELECT
  'big-' || lpad(g::text, 7, '0'), 1, 'NEW', 'PENDING', 'created', 'test', '{{}}',
  now() - interval '1 day', now() - interval '1 day' + (g % 86400) * interval '1 second', 'v1'
FROM generate_series(1, {ROWS}) AS g;
INSERT INTO scheduled_command (entity_id, command, arguments, due_at, created_at, done_at)
SELECT 'big-' || lpad(g::text, 7, '0'), 'stop', '{{}}',
  now() + (g % 7200 - 60) * interval '1 second', now() - interval '1 day',
  CASE WHEN g % 10 <> 0 THEN now() END
FROM generate_series(1, {ROWS // 10}) AS g;
INSERT INTO release_obligation (entity_id, state, requested_at, attempts, next_attempt_at,
  released_at)
SELECT 'big-' || lpad((g * 8 - 3)::text, 7, '0'), 'STOPPED', now() - interval '1 hour', 1,
  now() + (g % 600 - 30) * interval '1 second', CASE WHEN g % 20 <> 0 THEN now() END
FROM generate_series(1, {ROWS // 10}) AS g
"""


def _schema_url(server: str, schema: str) -> str:
    base = server.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="module")
def big(pg_server: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose search_path is a schema migrated as the product migrates it, filled
    with 1M entities (fast: secondary indexes dropped during the fill, then rebuilt), ANALYZEd."""
    schema = f"t_plans_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        Engine(_schema_url(pg_server, schema)).close()  # migrates
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute("SET session_replication_role = replica")  # no FK trigger per row
            conn.execute("SET maintenance_work_mem = '256MB'")
            secondary = conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes i WHERE schemaname = %s "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conname = i.indexname "
                "AND k.connamespace = %s::regnamespace)",
                (schema, schema),
            ).fetchall()
            for name, _ in secondary:
                conn.execute(f'DROP INDEX "{name}"')
            for statement in _FILL.split(";"):
                conn.execute(statement)  # type: ignore[call-overload]
            for _, definition in secondary:
                conn.execute(definition)
            conn.execute("VACUUM ANALYZE")
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.prepare_threshold = None  # only the PREPAREs of _full_scans
            yield conn
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


class Recorder:
    """Every statement psycopg's cursors send, with the parameters of its first execution."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: dict[str, Any] = {}
        execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany

        def on_execute(cursor: Any, query: Any, params: Any = None, **kw: Any) -> Any:
            self.seen.setdefault(str(query), params)
            return execute(cursor, query, params, **kw)

        def on_executemany(cursor: Any, query: Any, params_seq: Any, **kw: Any) -> Any:
            rows = list(params_seq)
            if rows:
                self.seen.setdefault(str(query), rows[0])
            return executemany(cursor, query, rows, **kw)

        monkeypatch.setattr(psycopg.Cursor, "execute", on_execute)
        monkeypatch.setattr(psycopg.Cursor, "executemany", on_executemany)

    def product(self) -> dict[str, Any]:
        """The reads and writes of our tables (not transaction control or catalog lookups)."""
        return {
            sql: params
            for sql, params in self.seen.items()
            if re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", sql, re.IGNORECASE)
            and _OURS.search(sql)
            and "pg_catalog" not in sql
            and "alembic_version" not in sql
        }


def _workload(url: str) -> None:
    """The engine, worker and store calls a deployment makes, on a small database."""
    clock = ManualClock()
    engine = Engine(url, clock=clock, refresh_scale=0.05)
    sim = SimBackend(seed=3)
    try:
        ids = populate(engine, sim, services=1100, hosts=3, operations=3, stop_every=7)
        engine.apply([Event(i, "job_pending") for i in ids])  # locks > 1 chunk of ids
        with pytest.raises(DuplicateEntity):  # the rows written before the taken id go again
            engine.create_many([NewEntity("service", id="fresh"), NewEntity("service", id=ids[0])])
        worker = Worker(engine, [sim])
        for _ in range(40):
            worker.tick()
            clock.advance(2)
        worker.schedule(ids[0], "stop", delay=1)
        clock.advance(5)
        worker.tick()
        engine.history(ids[1])
        engine.store.histories(ids[:50])
        engine.store.count_by_state()
        engine.store.list_entities(lifecycle="service", state="HEALTHY", limit=50)
        engine.store.list_entities(parent_id=ids[2], limit=50)
        engine.store.transitions_since(clock() - timedelta(seconds=30), 100)
        worker.open_work()
        with engine.store.transaction() as uow:
            queue.list_commands(uow, ids[0])
            queue.pull_refresh(uow, ids[:3], clock())
        with engine.store.reading() as conn:
            releases.pending(conn)
            releases.for_entity(conn, ids[0])
        worker.release()
    finally:
        engine.close()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _full_scans(
    conn: psycopg.Connection[Any], sql: str, params: Any, tables: frozenset[str] = BIG
) -> list[str]:
    """Seq Scans of `tables` in the custom plan for `params` and in the generic plan."""
    found = []
    custom = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()  # type: ignore[call-overload]
    assert custom is not None
    plans = {"custom": custom[0][0]["Plan"]}
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        names.append(match.group(1) or "")
        return f"${len(names)}"

    prepared = _PARAM.sub(number, sql)
    values = [params[n] for n in names] if isinstance(params, dict) else list(params or ())
    literals = psycopg.ClientCursor(conn).mogrify(", ".join(["%s"] * len(values)), values)
    conn.execute(f"PREPARE q AS {prepared}")  # type: ignore[call-overload]
    conn.execute("SET plan_cache_mode = force_generic_plan")
    try:
        run = (
            f"EXPLAIN (FORMAT JSON) EXECUTE q({literals})"
            if values
            else "EXPLAIN (FORMAT JSON) EXECUTE q"
        )
        generic = conn.execute(run).fetchone()  # type: ignore[call-overload]
        assert generic is not None
        plans["generic"] = generic[0][0]["Plan"]
    finally:
        conn.execute("RESET plan_cache_mode")
        conn.execute("DEALLOCATE q")
    for kind, plan in plans.items():
        for node in _nodes(plan):
            if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in tables:
                found.append(f"{kind} plan: Seq Scan on {node['Relation Name']}")
    return found


@pytest.fixture(scope="module")
def statements(pg_server: str) -> dict[str, Any]:
    """What the workload sent, recorded on a small database of its own."""
    schema = f"t_plans_small_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        with pytest.MonkeyPatch.context() as patch:
            recorder = Recorder(patch)
            _workload(_schema_url(pg_server, schema))
        return recorder.product()
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _problems(
    big: psycopg.Connection[Any], statements: dict[str, Any], tables: frozenset[str]
) -> str:
    found = []
    for sql, params in statements.items():
        found += [f"{scan}: {sql}" for scan in _full_scans(big, sql, params, tables)]
    return "\n".join(found)


def test_the_workload_sends_every_kind_of_statement(statements: dict[str, Any]) -> None:
    verbs = {sql.split()[0].upper() for sql in statements}
    assert {"SELECT", "INSERT", "UPDATE", "DELETE"} <= verbs and len(statements) >= 20
    texts = " ".join(statements)
    for needle in ("SKIP LOCKED", "= ANY(", "ON CONFLICT (id)", "deadline_at <=", "GROUP BY"):
        assert needle in texts, needle


def test_every_statement_stays_on_an_index_at_1m_rows(
    big: psycopg.Connection[Any], statements: dict[str, Any]
) -> None:
    problems = _problems(big, statements, BIG)
    assert not problems, problems


def test_the_queue_tables_stay_on_an_index(
    big: psycopg.Connection[Any], statements: dict[str, Any]
) -> None:
    problems = _problems(big, statements, QUEUES)
    assert not problems, problems


def test_the_lookup_of_1000_ids_uses_the_primary_key(big: psycopg.Connection[Any]) -> None:
    ids = [f"big-{n:07d}" for n in range(1, 1_000_001, 997)][:1000]
    assert len(ids) == 1000
    for lock in (True, False):
        sql, as_array = HotSql("postgresql").select_by_ids(len(ids), lock=lock)
        assert as_array
        assert _full_scans(big, sql, (ids,)) == []
        custom = big.execute("EXPLAIN (FORMAT JSON) " + sql, (ids,)).fetchone()  # type: ignore[call-overload]
        assert custom is not None
        scans = {n["Node Type"] for n in _nodes(custom[0][0]["Plan"]) if "Relation Name" in n}
        assert scans <= {"Index Scan", "Bitmap Heap Scan"}, scans
