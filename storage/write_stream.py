"""A batch's writes sent while the rest of the batch is still being decided (PostgreSQL).

On PostgreSQL the server spends far longer on a batch's writes (the versioned UPDATE and the
history INSERT, over a hundred microseconds a transition) than the engine's Python on deciding
it (some ten to fifteen), and without a stream the two run one after the other: the server
idles while Python decides, Python waits while the server writes. psycopg's pipeline mode sends
statements without waiting for their results, so the writes of the part already decided run on
the server while Python decides the next part. Results, and any error, are read when the
stream closes; nothing is committed until the transaction that holds the stream commits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine.interfaces import DBAPIModule
from sqlalchemy.exc import DBAPIError

from storage.hotsql import HotSql
from storage.records import EntityUpdate, RefreshMark, TransitionRow


def driver_error(
    conn: Connection, exc: DBAPIModule.Error, sql: str, params: Any, cursor: Any
) -> Exception:
    """`exc`, a DBAPI driver's error, as SQLAlchemy would have wrapped it (so
    `Store.transaction` translates it as any other), the connection invalidated if lost."""
    dialect = conn.dialect
    base = dialect.loaded_dbapi.Error
    lost = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
    if lost:
        conn.invalidate(exc)
    return DBAPIError.instance(sql, params, exc, base, connection_invalidated=lost, dialect=dialect)


class WriteStream:
    """Head updates and transitions of one transaction, sent part by part (`send`); each
    update's match is checked when the stream closes (`UnitOfWork.stream`)."""

    def __init__(self, conn: Connection, hot: HotSql) -> None:
        self._conn = conn
        self._hot = hot
        self._driver: Any = conn.connection.driver_connection
        self.sent_updates: list[tuple[Any, Sequence[EntityUpdate]]] = []  # (cursor, group)

    def send(
        self,
        updates: Sequence[EntityUpdate],
        transitions: Sequence[TransitionRow],
        marks: Mapping[str, RefreshMark] | None = None,
    ) -> None:
        """Send these heads (final: nothing later in the batch changes them), each with its
        refresh mark in `marks` if it has one (as `UnitOfWork.write`), and these transitions."""
        hot = self._hot
        for sql, group, params in hot.update_groups(updates, hot.codec.time_out, marks or {}):
            self.sent_updates.append((self._run(sql, params), group))
        if transitions:
            self._run(hot.insert_transition, [hot.transition_params(t) for t in transitions])

    def _run(self, sql: str, params: list[tuple[Any, ...]]) -> Any:
        cursor = self._driver.cursor()  # one per statement: each keeps its own row count
        try:
            cursor.executemany(sql, params)
        except self._conn.dialect.loaded_dbapi.Error as exc:
            raise driver_error(self._conn, exc, sql, params, cursor) from exc
        return cursor

    def check_matched(self, conflict: Callable[[Sequence[EntityUpdate]], None]) -> None:
        """Call `conflict` with the first group of updates that matched fewer rows than it has
        (`UnitOfWork._raise_conflict` raises); the counts are known once the stream is read."""
        for cursor, group in self.sent_updates:
            if cursor.rowcount != len(group):
                conflict(group)

    @contextmanager
    def pipelined(self) -> Iterator[WriteStream]:
        """The stream, in pipeline mode where the client library has it (libpq 14 and newer;
        without it every part is written at once, the same writes without the overlap)."""
        if not type(self._driver).__module__.startswith("psycopg") or not _pipelines():
            yield self
            return
        try:
            with self._driver.pipeline():
                yield self
        except self._conn.dialect.loaded_dbapi.Error as exc:  # a statement's, read at the end
            raise driver_error(self._conn, exc, "(pipelined writes)", (), None) from exc


def _pipelines() -> bool:
    import psycopg

    return bool(psycopg.Pipeline.is_supported())
