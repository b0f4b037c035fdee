"""Helpers of the hardening tests: a tiny lifecycle, real small file systems, and everything a
database holds as bytes (to prove a secret never reached it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fsm import Definition, Engine, Lifecycle
from storage.database import sqlite_path
from tests.components import unavailable

FLIP = Definition.from_dict(
    {
        "name": "flip",
        "states": [
            {"name": "ON", "initial": True},
            {"name": "OFF"},
            {"name": "END", "terminal": True},
        ],
        "transitions": [
            {"trigger": "flip", "source": "ON", "dest": "OFF"},
            {"trigger": "flip", "source": "OFF", "dest": "ON"},
            {"trigger": "note", "source": ["ON", "OFF"], "dest": "="},
            {"trigger": "end", "source": "*", "dest": "END"},
        ],
    }
)


def flip_engine(url: str, **options: object) -> Engine:
    return Engine(url, lifecycles=[Lifecycle(FLIP)], **options)  # type: ignore[arg-type]


@contextmanager
def small_fs(where: Path, size: str = "8m") -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `where` (root only), unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        unavailable("mounting a tmpfs needs root and mount(8)")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


def free_bytes(where: Path) -> int:
    st = os.statvfs(where)
    return st.f_bavail * st.f_frsize


def ballast(where: Path, leave: int) -> Path:
    """A file that fills `where` up to `leave` free bytes."""
    path = where / "ballast"
    size = max(free_bytes(where) - leave, 0)
    with path.open("wb") as out:
        chunk = b"\0" * 2**20
        while size > 0:
            out.write(chunk[: min(size, len(chunk))])
            size -= len(chunk)
    return path


def stored_bytes(engine: Engine) -> bytes:
    """Everything the database holds: the SQLite files themselves (database, WAL, shared
    memory), or every row of every table as PostgreSQL prints it."""
    path = sqlite_path(engine.store.url)
    if path is not None:
        parts = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")]
        return b"".join(p.read_bytes() for p in parts if p.exists())
    chunks: list[bytes] = []
    with engine.store.engine.connect() as conn:
        tables = conn.exec_driver_sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).scalars()
        for table in list(tables):
            for (text,) in conn.exec_driver_sql(f'SELECT t::text FROM "{table}" t'):
                chunks.append(str(text).encode())
    return b"\n".join(chunks)
