"""The store: the only code that writes SQL. Engine-agnostic records in, records out."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, inspect, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from storage import inserts
from storage.database import (
    READ_ONLY,
    check_existing,
    open_engine,
    redacted,
    resolve_url,
    sqlite_path,
    translate,
    translated,
)
from storage.errors import (
    DatabaseCorrupt,
    DuplicateEntity,
    EntityNotFound,
    StorageError,
    VersionConflict,
)
from storage.hotsql import HotSql
from storage.records import EntityRow, EntityUpdate, RefreshMark, StateCount, TransitionRow
from storage.sqlite_write import write_transaction
from storage.tables import definition_table, entity_table, transition_table
from storage.wal_space import WalSpace, disk_full
from storage.write_stream import WriteStream, driver_error

_LOCK_CHUNK = 500


def _entity(row: Row[Any]) -> EntityRow:
    return EntityRow(**row._mapping)


def _transition(row: Row[Any]) -> TransitionRow:
    return TransitionRow(**row._mapping)


class UnitOfWork:
    """Writes inside one database transaction; see `Store.transaction`."""

    def __init__(self, connection: Connection, hot: HotSql, *, lock_rows: bool) -> None:
        self._conn = connection
        self._hot = hot
        self._lock_rows = lock_rows
        self._cursor: Any = None

    def driver(self, sql: str, params: Any, *, many: bool = False, returning: bool = False) -> Any:
        """Run a hot-path statement on the DBAPI cursor of this transaction's connection.

        An SQLAlchemy execution context (result metadata, events, parameter processing) costs
        more per statement than SQLite's own work for a one-row write, and the hot statements
        need none of it. Driver errors are wrapped as SQLAlchemy would wrap them, so
        `Store.transaction` translates them as before. Returns the cursor, to fetch from.
        """
        cursor = self._cursor
        if cursor is None:
            driver = self._conn.connection.driver_connection
            assert driver is not None  # a checked-out connection always has one
            cursor = self._cursor = driver.cursor()
        try:
            if many:  # psycopg: `returning` keeps each row's RETURNING as one result set
                cursor.executemany(sql, params, **({"returning": True} if returning else {}))
            else:
                cursor.execute(sql, params)
        except self._conn.dialect.loaded_dbapi.Error as exc:
            raise driver_error(self._conn, exc, sql, params, cursor) from exc
        return cursor

    @contextmanager
    def stream(self) -> Iterator[WriteStream]:
        """Writes sent part by part while the caller decides the rest (`storage.write_stream`),
        each update's expected version checked on leaving, as `write` checks it."""
        stream = WriteStream(self._conn, self._hot)
        with stream.pipelined():
            yield stream
        stream.check_matched(self._raise_conflict)

    @property
    def connection(self) -> Connection:
        return self._conn

    @property
    def hot(self) -> HotSql:
        return self._hot

    @property
    def locks_rows(self) -> bool:
        """True where rows can be locked (PostgreSQL); SQLite locks the whole file instead."""
        return self._lock_rows

    def insert_entities(self, rows: Sequence[EntityRow]) -> None:
        """Insert new entities; `DuplicateEntity` names an id that is taken (or repeated),
        `EntityNotFound` a parent that does not exist."""
        seen: set[str] = set()
        for row in rows:
            if row.id in seen:
                raise DuplicateEntity(row.id)
            seen.add(row.id)
        if self._lock_rows:
            inserts.insert_new(self, rows, seen)
            return
        taken = self._existing(list(seen))
        if taken:
            raise DuplicateEntity(min(taken))
        parents = {r.parent_id for r in rows if r.parent_id is not None} - seen
        missing = parents - self._existing(sorted(parents))
        if missing:
            raise EntityNotFound(min(missing))
        if rows:
            params = [self._hot.entity_params(r) for r in rows]
            self.driver(self._hot.insert_entity, params, many=True)

    def ensure_definition(
        self, name: str, version: str, body: dict[str, Any], now: datetime
    ) -> None:
        """Remember a definition version in this transaction, so rows written with it can be
        replayed later. Concurrent writers of the same version are harmless: same content."""
        insert_fn = sqlite_insert if self._hot.sqlite else pg_insert
        statement = insert_fn(definition_table).on_conflict_do_nothing()
        self._conn.execute(
            statement, {"name": name, "version": version, "body": body, "created_at": now}
        )

    def _existing(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), _LOCK_CHUNK):
            chunk = ids[start : start + _LOCK_CHUNK]
            query = select(entity_table.c.id).where(entity_table.c.id.in_(chunk))
            found.update(self._conn.execute(query).scalars())
        return found

    def lock_entities(self, ids: Iterable[str]) -> dict[str, EntityRow]:
        """Read the given entities and, where the database can, lock them until commit.

        Rows are locked in one global order (code points, i.e. `COLLATE "C"`), across chunks
        too, so two batches over the same entities in any order wait instead of deadlocking.
        """
        wanted = list(dict.fromkeys(ids))
        if self._lock_rows:
            wanted.sort()
        found: dict[str, EntityRow] = {}
        hot = self._hot
        for start in range(0, len(wanted), _LOCK_CHUNK):
            chunk = wanted[start : start + _LOCK_CHUNK]
            sql, as_array = hot.select_by_ids(len(chunk), lock=self._lock_rows)
            params: Any = (chunk,) if as_array else tuple(chunk)
            for row in hot.entities_from(self.driver(sql, params).fetchall()):
                found[row.id] = row
        return found

    def write(
        self,
        updates: Sequence[EntityUpdate],
        transitions: Sequence[TransitionRow],
        marks: Mapping[str, RefreshMark] | None = None,
    ) -> None:
        """Move entity heads and append their transitions; all or nothing (`VersionConflict`,
        the caller's transaction rolled back, if an update no longer matches its expected
        version). A head with a mark in `marks` also ends its refresh and lease in that write."""
        hot = self._hot
        out = hot.batch_time_out(len(updates) + len(transitions))
        for sql, group, params in hot.update_groups(updates, out, marks or {}):
            if len(params) == 1:
                matched = self.driver(sql, params[0]).rowcount
            else:
                matched = self.driver(sql, params, many=True).rowcount
            if matched != len(params):
                self._raise_conflict(group)
        if transitions:
            rows = [hot.transition_params(t, out) for t in transitions]
            if len(rows) == 1:
                self.driver(hot.insert_transition, rows[0])
            else:
                self.driver(hot.insert_transition, rows, many=True)

    def _raise_conflict(self, updates: Sequence[EntityUpdate]) -> None:
        current = {
            row.id: row.version
            for row in self._conn.execute(
                select(entity_table.c.id, entity_table.c.version).where(
                    entity_table.c.id.in_([u.id for u in updates])
                )
            )
        }
        for u in updates:
            actual = current.get(u.id)
            if actual != u.version:
                raise VersionConflict(u.id, u.expected_version, actual)
        raise StorageError("an update matched fewer rows than expected")


class _WriterSlot:
    """A thread's SQLite write connection. Only the thread's locals refer to it, so it dies
    with the thread, and its finalizer gives the connection back to the pool."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn


class Store:
    """A database of entities and their transitions, opened from a URL."""

    def __init__(self, url: str | None = None, *, read_only: bool = False) -> None:
        self.url = resolve_url(url)
        self.read_only = read_only
        self.engine = open_engine(self.url, read_only=read_only)
        self.dialect = self.engine.dialect.name
        self._hot = HotSql(self.dialect)
        self._local = threading.local()
        self._writers: weakref.WeakSet[_WriterSlot] = weakref.WeakSet()
        self._writers_lock = threading.Lock()
        path = sqlite_path(self.url) if self.dialect == "sqlite" and not read_only else None
        self._space = WalSpace(path) if path is not None else None

    @classmethod
    def open_existing(cls, url: str | None = None) -> Store:
        """A read-only store on an existing fsm database: nothing is created, migrated, written
        or locked (readers never wait for a writer)."""
        resolved = resolve_url(url)
        check_existing(resolved)
        store = cls(resolved, read_only=True)
        try:
            with store.reading() as conn:
                has_schema = inspect(conn).has_table("entity")
            if not has_schema:
                raise DatabaseCorrupt(
                    f"{redacted(resolved)} is not an fsm database (no entity table)"
                )
            return store
        except BaseException:
            store.close()
            raise

    def __repr__(self) -> str:
        return f"Store({redacted(self.url)!r})"

    def close(self) -> None:
        with self._writers_lock:
            writers, self._writers = list(self._writers), weakref.WeakSet()
        for slot in writers:
            slot.conn.close()
        self._local = threading.local()
        self.engine.dispose()

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest migration."""
        from storage.migrate import upgrade

        upgrade(self)

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        """One database transaction: committed when the block ends, rolled back if it raises."""
        try:
            if self.dialect != "sqlite":
                with self.engine.begin() as conn:
                    yield UnitOfWork(conn, self._hot, lock_rows=True)
                return
            conn = self._writer()
            if self._space is not None:
                self._space.before_write(conn)
            try:
                with write_transaction(conn):
                    yield UnitOfWork(conn, self._hot, lock_rows=False)
            except BaseException as exc:
                if conn.invalidated:
                    self._local.writer = None
                    conn.close()
                elif self._space is not None and disk_full(exc):
                    self._space.filled(conn)
                raise
            if self._space is not None:
                self._space.after_write(conn)
        except SQLAlchemyError as exc:
            raise translate(exc, self.url) from exc

    def _writer(self) -> Connection:
        """This thread's SQLite write connection, kept checked out between transactions (the
        pool's checkout, reset-on-return and check-in cost more than a one-row commit) and
        given back when the thread ends."""
        slot: _WriterSlot | None = getattr(self._local, "writer", None)
        if slot is None or slot.conn.closed:
            conn = self.engine.connect()
            slot = self._local.writer = _WriterSlot(conn)
            weakref.finalize(slot, conn.close)
            with self._writers_lock:
                self._writers.add(slot)
        return slot.conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with translated(self.url), self.engine.connect() as conn:
            yield conn.execution_options(**{READ_ONLY: True})

    # -- reads -------------------------------------------------------------------------------

    def get_entity(self, entity_id: str) -> EntityRow | None:
        with self.reading() as conn:
            row = conn.execute(select(entity_table).where(entity_table.c.id == entity_id)).first()
        return _entity(row) if row is not None else None

    def list_entities(
        self,
        *,
        lifecycle: str | None = None,
        state: str | None = None,
        parent_id: str | None = None,
        limit: int | None = None,
        after_id: str | None = None,
    ) -> list[EntityRow]:
        query = select(entity_table).order_by(entity_table.c.id)
        if lifecycle is not None:
            query = query.where(entity_table.c.lifecycle == lifecycle)
        if state is not None:
            query = query.where(entity_table.c.state == state)
        if parent_id is not None:
            query = query.where(entity_table.c.parent_id == parent_id)
        if after_id is not None:
            query = query.where(entity_table.c.id > after_id)
        if limit is not None:
            query = query.limit(limit)
        with self.reading() as conn:
            return [_entity(row) for row in conn.execute(query)]

    def history(self, entity_id: str) -> list[TransitionRow]:
        query = (
            select(transition_table)
            .where(transition_table.c.entity_id == entity_id)
            .order_by(transition_table.c.seq)
        )
        with self.reading() as conn:
            return [_transition(row) for row in conn.execute(query)]

    def histories(self, entity_ids: Sequence[str]) -> dict[str, list[TransitionRow]]:
        """Histories of many entities in one query, each in sequence order."""
        result: dict[str, list[TransitionRow]] = {i: [] for i in entity_ids}
        if not entity_ids:
            return result
        query = (
            select(transition_table)
            .where(transition_table.c.entity_id.in_(list(entity_ids)))
            .order_by(transition_table.c.entity_id, transition_table.c.seq)
        )
        with self.reading() as conn:
            for row in conn.execute(query):
                result[row.entity_id].append(_transition(row))
        return result

    def transitions_since(
        self, after: datetime, limit: int = 1000
    ) -> list[tuple[str, TransitionRow]]:
        """(lifecycle, transition) recorded at or after `after`, oldest first (for `fsm watch`)."""
        query = (
            select(entity_table.c.lifecycle, transition_table)
            .join(entity_table, entity_table.c.id == transition_table.c.entity_id)
            .where(transition_table.c.recorded_at >= after)
            .order_by(
                transition_table.c.recorded_at,
                transition_table.c.entity_id,
                transition_table.c.seq,
            )
            .limit(limit)
        )
        with self.reading() as conn:
            return [(row[0], TransitionRow(*row[1:])) for row in conn.execute(query)]

    def count_by_state(self) -> list[StateCount]:
        query = (
            select(entity_table.c.lifecycle, entity_table.c.state, func.count())
            .group_by(entity_table.c.lifecycle, entity_table.c.state)
            .order_by(entity_table.c.lifecycle, entity_table.c.state)
        )
        with self.reading() as conn:
            return [StateCount(lc, st, int(n)) for lc, st, n in conn.execute(query)]

    # -- definitions -------------------------------------------------------------------------

    def definitions(self) -> dict[tuple[str, str], dict[str, Any]]:
        with self.reading() as conn:
            rows = conn.execute(select(definition_table))
            return {(r.name, r.version): dict(r.body) for r in rows}
