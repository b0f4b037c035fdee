"""Opening a database from a URL: SQLite file mode and pragmas, drivers, error translation."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from storage.errors import DatabaseCorrupt, DatabaseUnavailable, StorageError

DEFAULT_URL = "sqlite:///fsm.db"
ENV_VAR = "FSM_DB"

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
    "PRAGMA temp_store=MEMORY",
)


def resolve_url(url: str | None) -> str:
    """The URL given, else `$FSM_DB`, else `sqlite:///fsm.db` in the working directory."""
    chosen = url or os.environ.get(ENV_VAR) or DEFAULT_URL
    try:
        parsed = make_url(chosen)
    except ArgumentError as exc:
        raise DatabaseUnavailable(f"not a database URL: {chosen!r}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def redacted(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL; None for memory databases, URI filenames and servers."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    return None if database.startswith("file:") else Path(database)


def check_existing(url: str) -> None:
    """Refuse, read-only and before anything opens it, a SQLite file that is missing, empty or
    not ours: opening would create it or switch its journal to WAL."""
    path = sqlite_path(url)
    if path is None:
        return
    if not path.exists():
        raise DatabaseUnavailable(f"database {path} does not exist")
    if path.is_dir():
        raise DatabaseUnavailable(f"database {path} is a directory, not a SQLite file")
    if path.stat().st_size == 0:
        raise DatabaseCorrupt(f"database {path} is an empty file, not an fsm database")
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'entity'"
            ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise DatabaseCorrupt(f"{path} is not a SQLite database ({exc})") from exc
    if found is None:
        raise DatabaseCorrupt(f"{path} is not an fsm database (no entity table)")


def _create_private_file(path: Path) -> None:
    """Create the SQLite file with mode 0600 before SQLite does (SQLite would honour the umask)."""
    if path.exists():
        return
    if not path.parent.exists():
        raise DatabaseUnavailable(f"cannot create {path}: folder {path.parent} does not exist")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot create {path}: {exc.strerror}") from exc
    os.close(fd)


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself, so writers take the lock up front.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


READ_ONLY = "fsm_read_only"


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock up front (no deadlock-prone lock upgrades); readers take a
    # deferred snapshot so that `fsm status` never blocks a running worker.
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    statement = "BEGIN" if read_only else "BEGIN IMMEDIATE"
    # On the driver itself: an SQLAlchemy execution context costs more than the BEGIN.
    try:
        conn.connection.driver_connection.execute(statement)  # type: ignore[union-attr]
    except sqlite3.Error as exc:
        raise DBAPIError.instance(statement, (), exc, sqlite3.Error) from exc


def open_engine(url: str) -> Engine:
    """An SQLAlchemy engine for `url`, with the project's settings for its dialect."""
    parsed = make_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                _create_private_file(Path(database))
            if database in ("", ":memory:"):
                engine = create_engine(
                    url, poolclass=StaticPool, connect_args={"check_same_thread": False}
                )
            else:
                engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_begin)
            return engine
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise DatabaseUnavailable(f"cannot open {redacted(url)}: {exc}") from exc


def translate(exc: SQLAlchemyError, url: str) -> StorageError:
    """Turn a driver error into a typed, one-line storage error."""
    original = exc.orig if isinstance(exc, DBAPIError) else None
    text = (
        str(original or exc).strip().splitlines()[0] if str(original or exc).strip() else repr(exc)
    )
    if isinstance(original, sqlite3.DatabaseError) and "not a database" in text:
        return DatabaseCorrupt(f"{redacted(url)} is not a SQLite database ({text})")
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return DatabaseUnavailable(f"lost the connection to {redacted(url)}: {text}")
    if type(original).__name__ in ("OperationalError", "InterfaceError"):
        return DatabaseUnavailable(f"cannot use {redacted(url)}: {text}")
    return StorageError(f"database error on {redacted(url)}: {text}")


@contextmanager
def translated(url: str) -> Iterator[None]:
    """Run a block, raising storage errors instead of driver errors."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise translate(exc, url) from exc
