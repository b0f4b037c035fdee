"""Keeping a SQLite database writable on a nearly full disk.

SQLite folds its write-ahead log back into the database file only when the log reaches the
auto-checkpoint size (1000 pages, about 4 MB). With less free space than that, the log fills
the disk before it is ever folded back: every write fails, and whatever space an operator frees
is eaten by the log again, so a worker never recovers although its database is small.

So a store watches the free space (a `statvfs` every few seconds, nothing per write while space
is ample). When it runs low, or a write failed because the disk was full, the store folds the
log back and cuts it to zero bytes (`PRAGMA wal_checkpoint(TRUNCATE)`) whenever it has grown
past a share of the free space, before writing more. If even that cannot be done (the folded
pages need room the disk does not have), the write goes ahead and fails with `DatabaseFull` if it
does not fit; as soon as space is freed, the next write folds the log back first, so the freed
space goes to the database, not to a longer log.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from storage.errors import DatabaseFull

AMPLE = 32 * 2**20
"""Free bytes above which the log is left to SQLite's own checkpoints."""
_MAX_LOG_WHEN_LOW = 2**20
_CHECK_EVERY = 2.0
_FULL = 13  # SQLITE_FULL


def disk_full(exc: BaseException) -> bool:
    """True for an error that says the disk is full (as raised inside a transaction)."""
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(original, "sqlite_errorcode", None) == _FULL or isinstance(exc, DatabaseFull)


class WalSpace:
    """Free-space watch for one SQLite database file (shared by the store's threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log = Path(f"{path}-wal")
        self.low = False
        self._next_check = 0.0
        self._lock = threading.Lock()

    def _free(self) -> int | None:
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def _log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def before_write(self, conn: Connection) -> None:
        """Called before each write transaction: keep the log within the free space."""
        if not self.low:
            now = time.monotonic()
            if now < self._next_check:
                return
            self._next_check = now + _CHECK_EVERY
        free = self._free()
        if free is None:
            return
        if free >= AMPLE:
            self.low = False
            return
        self.low = True
        log = self._log_size()
        if log and (log >= free // 2 or log >= _MAX_LOG_WHEN_LOW):
            # fold it back before writing more; if that cannot be done yet (no room for the
            # folded pages, a reader on the log), the write itself says whether it fits
            self.reclaim(conn)

    def after_write(self, conn: Connection) -> None:
        if self.low:
            self.before_write(conn)

    def filled(self, conn: Connection) -> None:
        """A write failed because the disk was full (and was rolled back): give the log's
        space back so the next attempt has room."""
        self.low = True
        self.reclaim(conn)

    def reclaim(self, conn: Connection) -> bool:
        """Fold the log into the database and truncate it; False if it could not be done
        (no room for the folded pages, or a reader still needs the log)."""
        driver = conn.connection.driver_connection
        if driver is None or conn.in_transaction() or driver.in_transaction:
            return False
        with self._lock:
            try:
                row = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error:
                return False
        return row is not None and row[0] == 0
