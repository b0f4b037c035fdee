"""The local backend's private state directory: its own records, logs and exit codes.

The directory is the root of trust for what the backend may signal, so it must be ours alone:
it is created 0700, forced to 0700 if it is ours but readable by others, and refused if another
user owns it, if others may write to it or if it is a symlink. It is opened once and every file
in it is reached through that descriptor (no path is resolved again), never through a symlink
(`O_NOFOLLOW`), and written by creating a fresh file (`O_EXCL`) and renaming it into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_RECORD = 64 * 1024
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class StateDirError(ValueError):
    """The state directory cannot be trusted (owner, mode, symlink) or cannot be made."""


def _check(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISDIR(info.st_mode):
        raise StateDirError(f"state_dir {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise StateDirError(
            f"state_dir {path} is owned by uid {info.st_uid}, not by this user "
            f"(uid {os.geteuid()}): refusing to trust it"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateDirError(
            f"state_dir {path} is writable by other users (mode {stat.S_IMODE(info.st_mode):04o}): "
            "refusing to trust it; use a private directory"
        )


def open_state_dir(path: Path) -> int:
    """Create (0700) or check `path` and return a descriptor of it; raises `StateDirError`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    except OSError as exc:
        reason = "it is a symlink" if os.path.islink(path) else exc.strerror
        raise StateDirError(f"cannot use state_dir {path}: {reason}") from exc
    try:
        info = os.fstat(fd)
        _check(path, info)
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)  # ours, but readable by others: make it private
    except OSError as exc:
        os.close(fd)
        raise StateDirError(f"cannot make state_dir {path} private: {exc.strerror}") from exc
    except BaseException:
        os.close(fd)
        raise
    return fd


def entity_key(entity_id: str, created_at: datetime) -> str:
    """The file stem of an entity's files: readable, and unique even across databases that
    share the directory (an id can repeat, the id with its creation time does not)."""
    digest = hashlib.sha256(f"{entity_id}\0{created_at.isoformat()}".encode()).hexdigest()
    return f"{_SAFE.sub('_', entity_id)[:60]}-{digest[:16]}"


class StateDir:
    """Files of one backend, all reached through one directory descriptor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = open_state_dir(path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- reading: only regular files of ours that nobody else can write ---------------------

    def read(self, name: str, limit: int = _MAX_RECORD) -> bytes | None:
        """The content of `name`, or None if it is missing or not a private file of ours."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW, dir_fd=self.fd)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if (
                not stat.S_ISREG(info.st_mode)
                or info.st_uid != os.geteuid()
                or info.st_mode & 0o022
                or info.st_size > limit
            ):
                return None
            return os.read(fd, limit + 1)[:limit]
        except OSError:
            return None
        finally:
            os.close(fd)

    def read_json(self, name: str) -> dict[str, Any] | None:
        raw = self.read(name)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    # -- writing: a fresh file renamed into place, never through a planted link -------------

    def write_json(self, name: str, value: Mapping[str, Any]) -> None:
        """Atomically replace `name` (readers see the old or the new content, never a part)."""
        data = json.dumps(value, sort_keys=True).encode()
        partial = f".{name}.{secrets.token_hex(8)}.partial"
        fd = os.open(
            partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=self.fd
        )
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                out.write(data)
                out.flush()
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            self.remove(partial)
            raise
        os.close(fd)
        os.replace(partial, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def open_log(self, name: str) -> int:
        """A descriptor appending to `name` (created 0600); refuses a planted link or file."""
        fd = os.open(
            name,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | _NOFOLLOW,
            0o600,
            dir_fd=self.fd,
        )
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_nlink != 1:
            os.close(fd)
            raise StateDirError(f"{self.path / name} is not a private log file of ours")
        os.set_blocking(fd, True)
        return fd

    def remove(self, name: str) -> None:
        """Unlink `name` itself (a symlink is removed, never its target)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)
