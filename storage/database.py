"""Opening a database from a URL: SQLite file mode and pragmas, drivers, error translation."""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import QueuePool, StaticPool

from storage import sqlite_file
from storage.errors import DatabaseCorrupt, DatabaseFull, DatabaseUnavailable, StorageError

DEFAULT_URL = "sqlite:///fsm.db"
ENV_VAR = "FSM_DB"

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
    "PRAGMA temp_store=MEMORY",
    # after a checkpoint the WAL is cut back to this size, so space it took during a burst (or
    # while the disk was full) goes back to the file system instead of staying reserved
    "PRAGMA journal_size_limit=4194304",
    # a writer's page cache (default 2 MiB): random entity ids touch random index pages, and a
    # page found here is not read again through the OS. 12 MiB: 16 MiB pushed memory per entity
    # past its 1 KiB target at 20k entities (bench memory_per_entity --quick: 1.01); readers keep
    # the default
    "PRAGMA cache_size=-12288",
)
_READER_PRAGMAS = ("PRAGMA busy_timeout=5000", "PRAGMA temp_store=MEMORY")
_FULL = 13  # SQLITE_FULL
_CORRUPT = 11  # SQLITE_CORRUPT: a damaged page (`database disk image is malformed`)

# Until `fsm.redaction` registers the project's policy (storage imports nothing of fsm): the
# password of a URL and secret-looking query parameters, also in malformed URLs.
_URL_SECRET = re.compile(
    r"(?P<head>(?:://|^|\s)[^\s:/?#@]*:)(?P<a>\S+)(?=@)"
    r"|(?P<qhead>[?&;][^=&\s]*(?:pass|secret|token|key|pwd)[^=&\s]*=)(?P<b>[^&\s]*)",
    re.IGNORECASE,
)


def _mask_urls(text: str) -> str:
    """The password of a URL (also without a scheme: `user:pw@host`) and secret-looking query
    parameters, masked."""
    return _URL_SECRET.sub(lambda m: f"{m.group('head') or m.group('qhead')}***", text)


_redact_text: Callable[[str], str] = _mask_urls
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(?P<userinfo>[^/?#]*)@")


def _password_pieces(url: str) -> list[str]:
    """The password of `url` read greedily (up to the last `@` of its authority) and its parts
    between `@`s: a driver that split a raw `@` in a password at the first one names the rest
    as the host in its message (`failed to resolve host 'ss<secret>@db'`)."""
    found = _USERINFO.match(url)
    if found is None or ":" not in found.group("userinfo"):
        return []
    password = found.group("userinfo").partition(":")[2]
    pieces = {password, *password.split("@")}
    return sorted((p for p in pieces if len(p) >= 3), key=len, reverse=True)


def _mask_message(text: str, url: str) -> str:
    """A driver's message about `url`, with the policy applied and every piece of the URL's
    password masked wherever it appears."""
    for piece in _password_pieces(url):
        text = text.replace(piece, "***")
    return _redact_text(text)


def use_redactor(redactor: Callable[[str], str]) -> None:
    """Mask storage's messages with `redactor` (fsm registers its redaction policy)."""
    global _redact_text
    _redact_text = redactor


def redact_text(text: str) -> str:
    """`text` with secrets masked by the registered policy (for text storage writes)."""
    return _redact_text(text)


def resolve_url(url: str | None) -> str:
    """The URL given, else `$FSM_DB`, else `sqlite:///fsm.db` in the working directory."""
    chosen = url or os.environ.get(ENV_VAR) or DEFAULT_URL
    if not isinstance(chosen, str):
        raise DatabaseUnavailable(f"a database URL must be a string, not {type(chosen).__name__}")
    try:
        parsed = make_url(chosen)
    except (ArgumentError, ValueError) as exc:
        where = f" (from ${ENV_VAR})" if not url else ""
        raise DatabaseUnavailable(f"not a database URL{where}: {redacted(chosen)!r}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def redacted(url: str) -> str:
    """The URL with its password (and any secret query parameter) hidden, for messages and
    logs; a malformed URL is masked as text."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        shown = str(url)
    return _redact_text(_mask_urls(shown))


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
    if path is not None:
        sqlite_file.check_existing(path)


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself, so writers take the lock up front.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _postgres_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Sessions in UTC: psycopg then loads timestamptz as datetimes in `datetime.UTC` (its C
    # loader's fast path, and nothing for `Codec.time_in` to convert) instead of in the server's
    # zone (e.g. `Etc/UTC`, a ZoneInfo): ~3 us less per entity row read (bench pg_batch_raw).
    # Stored instants are the same; only how the session renders and truncates them changes.
    dbapi_connection.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def _reader_on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    for pragma in _READER_PRAGMAS:
        dbapi_connection.execute(pragma)


READ_ONLY = "fsm_read_only"


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock up front (no deadlock-prone lock upgrades); readers take a
    # deferred snapshot so that `fsm status` never blocks a running worker.
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    if driver.in_transaction:  # begun on the driver: storage.sqlite_write.write_transaction
        return
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    statement = "BEGIN" if read_only else "BEGIN IMMEDIATE"
    # On the driver itself: an SQLAlchemy execution context costs more than the BEGIN.
    try:
        driver.execute(statement)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(statement, (), exc, sqlite3.Error) from exc


def _reader_begin(conn: Connection) -> None:
    conn.connection.driver_connection.execute("BEGIN")  # type: ignore[union-attr]


def open_engine(url: str, *, read_only: bool = False) -> Engine:
    """An SQLAlchemy engine for `url`, with the project's settings for its dialect.

    `read_only` (SQLite): never create the file, never take the write lock, and read a
    database on a read-only file system as an immutable file.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseUnavailable(
            f"unsupported database {redacted(url)!r}: use sqlite:///PATH or postgresql://..."
        )
    try:
        if backend != "sqlite":
            engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
            event.listen(engine, "connect", _postgres_on_connect)
            return engine
        database = parsed.database or ""
        if database in ("", ":memory:"):
            engine = create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        elif read_only and not database.startswith("file:"):
            uri = sqlite_file.readable_uri(Path(database))
            engine = create_engine(
                "sqlite://",
                poolclass=QueuePool,
                pool_size=2,
                max_overflow=-1,
                creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False),
            )
            event.listen(engine, "connect", _reader_on_connect)
            event.listen(engine, "begin", _reader_begin)
            return engine
        else:
            if not database.startswith("file:"):
                sqlite_file.create_private_file(Path(database))
            # Threads keep their write connection between transactions (see Store._writer)
            # and give it back when they end: never block a new thread on a pool limit.
            engine = create_engine(
                url,
                poolclass=QueuePool,
                pool_size=5,
                max_overflow=-1,
                connect_args={"check_same_thread": False},
            )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        reason = _mask_message(str(exc), url)
        raise DatabaseUnavailable(f"cannot open {redacted(url)}: {reason}") from exc


_FILE_ERRORS = ("SQLITE_NOTADB", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")


def _sqlstate(error: BaseException | None) -> str | None:
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def translate(exc: SQLAlchemyError, url: str) -> StorageError:
    """Turn a driver error into a typed, one-line storage error (secrets masked)."""
    original = exc.orig if isinstance(exc, DBAPIError) else None
    text = _mask_message(_first_line(original or exc), url)
    where = redacted(url)
    if getattr(original, "sqlite_errorcode", None) == _FULL or _sqlstate(original) == "53100":
        return DatabaseFull(f"{where}: the disk is full ({text}); free space and it resumes")
    if (getattr(original, "sqlite_errorcode", None) or 0) & 0xFF == _CORRUPT:
        return DatabaseCorrupt(
            f"{where} is damaged ({text}); no write can succeed: restore it from a backup"
        )
    if isinstance(original, sqlite3.Error):
        path = sqlite_path(url)
        name = getattr(original, "sqlite_errorname", "") or ""
        if path is not None and (name.startswith(_FILE_ERRORS) or "not a database" in text):
            return sqlite_file.describe(original, path)
    if isinstance(original, sqlite3.DatabaseError) and "not a database" in text:
        return DatabaseCorrupt(f"{where} is not a SQLite database ({text})")
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return DatabaseUnavailable(f"lost the connection to {where}: {text}")
    if type(original).__name__ in ("OperationalError", "InterfaceError"):
        return DatabaseUnavailable(f"cannot use {where}: {text}")
    return StorageError(f"database error on {where}: {text}")


@contextmanager
def translated(url: str) -> Iterator[None]:
    """Run a block, raising storage errors instead of driver errors."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise translate(exc, url) from exc
