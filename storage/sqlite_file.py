"""The file behind a SQLite database: created private, never through a link, and described
truthfully when it cannot be used (missing, a directory, on a read-only file system, not ours).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from storage.errors import DatabaseCorrupt, DatabaseUnavailable

SIDECARS = ("-wal", "-shm", "-journal")
_NOT_A_DATABASE = 26  # SQLITE_NOTADB


def read_only_fs(path: Path) -> bool:
    """True when the file system holding `path` (or its folder) is mounted read-only."""
    target = path if path.exists() else path.parent
    try:
        return bool(os.statvfs(target).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _refuse_links(path: Path) -> None:
    """SQLite opens its journal files with O_CREAT and follows links: a link planted at one of
    them would make it write (with the database's mode) wherever the link points."""
    folders = {path.parent, path.resolve().parent}
    names = {path.name, path.resolve().name}
    for folder in folders:
        for name in names:
            for suffix in SIDECARS:
                side = folder / f"{name}{suffix}"
                if side.is_symlink():
                    raise DatabaseUnavailable(
                        f"refusing to open {path}: {side} is a symbolic link (SQLite would "
                        "write its journal through it); remove it"
                    )


def create_private_file(path: Path) -> None:
    """Create the database file with mode 0600 before SQLite does (SQLite would honour the
    umask), never through a symbolic link; an existing file (or a link to one) is left alone."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot use {path}: {exc.strerror}") from exc
    if info is not None:
        if stat.S_ISLNK(info.st_mode) and not path.exists():
            raise DatabaseUnavailable(
                f"refusing to create a database through {path}: it is a symbolic link to "
                f"{os.readlink(path)}, which does not exist"
            )
        _refuse_links(path)
        return
    if not path.parent.is_dir():
        raise DatabaseUnavailable(f"cannot create {path}: folder {path.parent} does not exist")
    if read_only_fs(path):
        raise DatabaseUnavailable(f"cannot create {path}: the file system is read-only")
    _refuse_links(path)
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        create_private_file(path)  # appeared meanwhile: check it like any existing file
        return
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot create {path}: {exc.strerror}") from exc
    os.close(fd)


def readable_uri(path: Path) -> str:
    """The URI a reader opens `path` with (read-only; immutable on a read-only file system, where
    SQLite could not create the shared-memory file a WAL database needs)."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    if read_only_fs(path):
        wal = Path(f"{path.resolve()}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise DatabaseUnavailable(
                f"cannot read {path}: it is on a read-only file system and its write-ahead log "
                f"{wal.name} holds changes SQLite cannot read without write access; copy the "
                "database and its -wal file to a writable folder"
            )
        uri += "&immutable=1"
    return uri


def check_existing(path: Path) -> None:
    """Refuse, read-only and before anything opens it, a file that is missing, empty or not an
    fsm database, saying exactly which; opening it would create it or switch it to WAL."""
    if not path.exists():
        kind = "a symbolic link to a missing file" if path.is_symlink() else "does not exist"
        raise DatabaseUnavailable(f"database {path} {kind}")
    if path.is_dir():
        raise DatabaseUnavailable(f"database {path} is a directory, not a SQLite file")
    if not os.access(path, os.R_OK):
        raise DatabaseUnavailable(f"cannot read database {path}: permission denied")
    if path.stat().st_size == 0:
        raise DatabaseCorrupt(f"database {path} is an empty file, not an fsm database")
    _refuse_links(path)  # a reader too: SQLite opens `-shm` read-write, through a link
    try:
        conn = sqlite3.connect(readable_uri(path), uri=True)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'entity'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise describe(exc, path) from exc
    if found is None:
        raise DatabaseCorrupt(f"{path} is not an fsm database (no entity table)")


def describe(exc: sqlite3.Error, path: Path) -> DatabaseUnavailable | DatabaseCorrupt:
    """What a SQLite error on `path` means, in words an operator can act on."""
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", "") or ""
    if code == _NOT_A_DATABASE:
        return DatabaseCorrupt(f"{path} is not a SQLite database ({exc})")
    if read_only_fs(path):
        return DatabaseUnavailable(
            f"cannot use {path}: its file system is read-only ({exc}); nothing is wrong with "
            "the file"
        )
    if name.startswith("SQLITE_READONLY"):
        return DatabaseUnavailable(f"cannot write {path}: {exc} ({name})")
    if name == "SQLITE_CANTOPEN" and not os.access(path.resolve().parent, os.W_OK):
        return DatabaseUnavailable(
            f"cannot open {path}: SQLite must create {path.name}-shm next to it, and this user "
            f"cannot write to {path.resolve().parent} ({exc})"
        )
    return DatabaseUnavailable(f"cannot open {path}: {exc}")
