"""The hand-written anchors bench/run.py measures the engine against, in the same run.

(a) `ConventionalFsm`: the minimal persisted FSM a competent user writes by hand in raw sqlite3,
    on its own fixed schema; it never follows ours, so it stays a fixed yardstick.
(b) `OwnFloor`: stdlib sqlite3 running the engine's own statements (`storage.hotsql`) with every
    parameter computed beforehand: what our schema alone costs.
(c) `CorePeer`: pytransitions (one reused model) deciding, SQLAlchemy Core writing our rows.
(d) `PgFloor`: psycopg executemany of the engine's own PostgreSQL statements.
(e) `refresh_floor.RefreshFloor`: the worker's refresh statements (claim, lease, re-read,
    heads, transitions, next refresh) with precomputed parameters.

Every class does its setup (schema, rows, parameters) in `__init__`, untimed; the timed calls do
only what they are named for.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rawfsm import Rules, iso, raw_machine
from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Engine as SaEngine

from fsm.lifecycle import Lifecycle
from storage.database import _SQLITE_PRAGMAS
from storage.hotsql import HotSql
from storage.records import EntityUpdate, TransitionRow
from storage.tables import entity_table, transition_table

_CHUNK = 500


class ConventionalFsm:
    """(a) Entity table (random UUID primary key, state, version, updated_at, an index on
    state), history table (integer primary key, unique (entity_id, seq), from/to/event/time);
    per batch: one SELECT of the heads, one versioned UPDATE + one INSERT per transition by
    executemany, one commit. WAL, synchronous=NORMAL. Kept fixed, whatever our schema becomes.
    """

    SCHEMA = (
        "CREATE TABLE entity (id TEXT PRIMARY KEY, state TEXT NOT NULL, "
        "version INTEGER NOT NULL, updated_at TEXT NOT NULL)",
        "CREATE INDEX ix_entity_state ON entity (state)",
        "CREATE TABLE history (id INTEGER PRIMARY KEY, entity_id TEXT NOT NULL "
        "REFERENCES entity (id), seq INTEGER NOT NULL, from_state TEXT NOT NULL, "
        "to_state TEXT NOT NULL, event TEXT NOT NULL, at TEXT NOT NULL, "
        "UNIQUE (entity_id, seq))",
    )
    UPDATE = "UPDATE entity SET state = ?, version = ?, updated_at = ? WHERE id = ? AND version = ?"
    INSERT = (
        "INSERT INTO history (entity_id, seq, from_state, to_state, event, at) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )

    @classmethod
    def build(cls, path: Path, ids: Sequence[str], initial: str) -> None:
        """The database of `ids`, all in `initial` (setup)."""
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in cls.SCHEMA:
            conn.execute(statement)
        stamp = iso(datetime.now(UTC))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO entity VALUES (?, ?, 0, ?)", [(i, initial, stamp) for i in ids]
        )
        conn.commit()
        conn.close()

    def __init__(self, path: Path, rules: Rules) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.dest = rules.dest

    def apply(self, events: Sequence[tuple[str, str]]) -> None:
        """One batch of (entity id, event): read the heads, decide, write, commit."""
        conn, dest = self.conn, self.dest
        stamp = iso(datetime.now(UTC))
        conn.execute("BEGIN IMMEDIATE")
        heads: dict[str, tuple[str, int]] = {}
        for start in range(0, len(events), _CHUNK):
            part = [e[0] for e in events[start : start + _CHUNK]]
            sql = (
                f"SELECT id, state, version FROM entity WHERE id IN ({', '.join('?' * len(part))})"
            )
            for entity_id, state, version in conn.execute(sql, part):
                heads[entity_id] = (state, version)
        updates, inserts = [], []
        for entity_id, event in events:
            state, version = heads[entity_id]
            to = dest[(state, event)]
            updates.append((to, version + 1, stamp, entity_id, version))
            inserts.append((entity_id, version + 1, state, to, event, stamp))
        if conn.executemany(self.UPDATE, updates).rowcount != len(updates):
            conn.rollback()
            raise RuntimeError("conventional FSM: a version conflict")
        conn.executemany(self.INSERT, inserts)
        conn.commit()

    def close(self) -> None:
        self.conn.close()


def raw_connection(path: Path) -> sqlite3.Connection:
    """A stdlib connection with the project's pragmas."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in _SQLITE_PRAGMAS:
        conn.execute(pragma)
    return conn


def own_params(
    hot: HotSql,
    rules: Rules,
    heads: dict[str, tuple[str, int, int]],
    events: Sequence[tuple[str, str]],
    now: datetime,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The engine's own UPDATE and INSERT parameters for moving each entity by its event."""
    updates, inserts = [], []
    for entity_id, name in events:
        state, version, seq = heads[entity_id]
        dest = rules.dest[(state, name)]
        limit, refresh = rules.limit[dest], rules.refresh[dest]
        update = EntityUpdate(
            entity_id,
            version,
            dest,
            dest in rules.terminal,
            version + 1,
            seq + 1,
            now,
            None if limit is None else now + limit,
            None if refresh is None else now + refresh,
            now,
            rules.version,
        )
        row = TransitionRow(
            entity_id, seq + 1, state, dest, name, "user", {}, now, now, rules.version
        )
        updates.append(hot.update_params(update))
        inserts.append(hot.transition_params(row))
    return updates, inserts


class OwnFloor:
    """(b) The engine's own statements on its own schema, parameters computed beforehand:
    BEGIN IMMEDIATE, the SELECT of the rows, executemany UPDATE + INSERT, COMMIT per batch."""

    def __init__(self, path: Path, rules: Rules, events: Sequence[tuple[str, str]], size: int):
        self.hot = HotSql("sqlite")
        self.conn = raw_connection(path)
        heads = {
            i: (state, version, seq)
            for i, state, version, seq in self.conn.execute(
                "SELECT id, state, version, seq FROM entity"
            )
        }
        self.ids = [e[0] for e in events]
        self.updates, self.inserts = own_params(self.hot, rules, heads, events, datetime.now(UTC))
        self.size = size

    def lane(self, chunk: int) -> float:
        from time import perf_counter

        start, end = chunk * self.size, (chunk + 1) * self.size
        if start >= len(self.ids):
            return 0.0
        conn, hot = self.conn, self.hot
        began = perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        part = self.ids[start:end]
        for at in range(0, len(part), _CHUNK):
            wanted = part[at : at + _CHUNK]
            conn.execute(hot.select_by_ids(len(wanted), lock=False)[0], wanted).fetchall()
        conn.executemany(hot.update_head, self.updates[start:end])  # in the store's order
        conn.executemany(hot.insert_transition, self.inserts[start:end])
        conn.commit()
        return perf_counter() - began

    def close(self) -> None:
        self.conn.close()


class CorePeer:
    """(c) pytransitions with one reused model decides; SQLAlchemy Core reads the heads and
    writes our own rows (executemany UPDATE and INSERT), one commit per batch."""

    def __init__(self, engine: SaEngine, lifecycle: Lifecycle, rules: Rules) -> None:
        self.engine = engine
        self.rules = rules
        self.machine, self.model = raw_machine(lifecycle.definition)
        e = entity_table.c
        self.update = (
            update(entity_table)
            .where(e.id == bindparam("b_id"), e.version == bindparam("b_version"))
            .values(
                state=bindparam("state"),
                terminal=bindparam("terminal"),
                version=bindparam("version"),
                seq=bindparam("seq"),
                state_entered_at=bindparam("state_entered_at"),
                deadline_at=bindparam("deadline_at"),
                next_refresh_at=bindparam("next_refresh_at"),
                updated_at=bindparam("updated_at"),
            )
        )

    def apply(self, events: Sequence[tuple[str, str]]) -> None:
        rules, model = self.rules, self.model
        now = datetime.now(UTC)
        e = entity_table.c
        wanted = dict(events)
        with self.engine.begin() as conn:
            heads = conn.execute(
                select(e.id, e.state, e.version, e.seq).where(e.id.in_(list(wanted)))
            ).all()
            updates, inserts = [], []
            for entity_id, state, version, seq in heads:
                model.state = state
                name = wanted[entity_id]
                model.trigger(name)
                dest = model.state
                limit, refresh = rules.limit[dest], rules.refresh[dest]
                updates.append(
                    {
                        "b_id": entity_id,
                        "b_version": version,
                        "state": dest,
                        "terminal": dest in rules.terminal,
                        "version": version + 1,
                        "seq": seq + 1,
                        "state_entered_at": now,
                        "deadline_at": None if limit is None else now + limit,
                        "next_refresh_at": None if refresh is None else now + refresh,
                        "updated_at": now,
                    }
                )
                inserts.append(
                    {
                        "entity_id": entity_id,
                        "seq": seq + 1,
                        "from_state": state,
                        "to_state": dest,
                        "event": name,
                        "source": "user",
                        "payload": {},
                        "observed_at": now,
                        "recorded_at": now,
                        "definition_version": rules.version,
                    }
                )
            if conn.execute(self.update, updates).rowcount != len(updates):
                raise RuntimeError("core peer: a version conflict")
            conn.execute(transition_table.insert(), inserts)


class PgFloor:
    """(d) psycopg executemany of the engine's own PostgreSQL statements, precomputed
    parameters: the locking SELECT, the versioned UPDATEs, the INSERTs, one commit per batch."""

    def __init__(
        self, conn: Any, rules: Rules, events: Sequence[tuple[str, str]], size: int
    ) -> None:
        self.conn = conn  # a psycopg connection whose search_path is the engine's schema
        self.hot = HotSql("postgresql")
        ids = [e[0] for e in events]
        with self.conn.cursor() as cur:
            cur.execute("SELECT id, state, version, seq FROM entity WHERE id = ANY(%s)", (ids,))
            heads = {i: (s, v, q) for i, s, v, q in cur.fetchall()}
        self.conn.commit()
        self.ids = ids
        self.updates, self.inserts = own_params(self.hot, rules, heads, events, datetime.now(UTC))
        self.size = size

    def lane(self, chunk: int) -> float:
        from time import perf_counter

        start, end = chunk * self.size, (chunk + 1) * self.size
        if start >= len(self.ids):
            return 0.0
        hot = self.hot
        began = perf_counter()
        with self.conn.cursor() as cur:
            part = sorted(self.ids[start:end])
            for at in range(0, len(part), _CHUNK):
                sql, _ = hot.select_by_ids(0, lock=True)
                cur.execute(sql, (part[at : at + _CHUNK],))
                cur.fetchall()
            cur.executemany(hot.update_head, self.updates[start:end])
            cur.executemany(hot.insert_transition, self.inserts[start:end])
        self.conn.commit()
        return perf_counter() - began
