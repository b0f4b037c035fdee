"""Audit of issue 8, items 12 and 13: a worker on a database whose file system is read-only.

A database left with a hot write-ahead log (its writer was killed) can still be read on a
read-only mount, so the worker's start-up got through and every tick then failed: it ran
forever without progress. It must say why once and exit non-zero, as for a clean file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.components import unavailable

ROOT = Path(__file__).resolve().parent.parent
HOT_WAL = """
import os, sys
sys.path.insert(0, {root!r})
from fsm import Engine
engine = Engine("sqlite:///" + {db!r})
for _ in range(3):
    engine.create("service")
os._exit(0)  # killed, in effect: the WAL is never checkpointed
"""


@contextmanager
def read_only_view(folder: Path, view: Path) -> Iterator[Path]:
    """`folder` seen through a read-only bind mount at `view` (root only)."""
    if os.geteuid() != 0:
        unavailable("a read-only bind mount needs root")
    view.mkdir()
    subprocess.run(["mount", "--bind", str(folder), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


@pytest.mark.parametrize("hot_wal", [True, False])
def test_a_worker_on_a_read_only_file_system_says_so_once_and_exits(
    tmp_path: Path, hot_wal: bool
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    db = folder / "fsm.db"
    script = HOT_WAL.format(root=str(ROOT), db=str(db))
    if not hot_wal:
        script = script.replace("os._exit(0)", "engine.close()")
    subprocess.run([sys.executable, "-c", script], check=True)
    assert Path(f"{db}-wal").exists() == hot_wal
    with read_only_view(folder, tmp_path / "ro") as view:
        fsm = [sys.executable, "-m", "fsm", "run", "--db", f"sqlite:///{view}/fsm.db"]
        done = subprocess.run(fsm, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1, done.stderr
    assert "read-only" in done.stderr and "nothing is wrong with the file" in done.stderr
    assert "Traceback" not in done.stderr
    assert "not a SQLite database" not in done.stderr


@pytest.mark.parametrize("flag", ["+i", "+a"])
def test_a_worker_on_a_file_it_cannot_write_says_so_and_exits(tmp_path: Path, flag: str) -> None:
    """An immutable or append-only database file (chattr): reads work, every write fails with
    SQLITE_READONLY; the worker is refused at start-up instead of failing every tick."""
    db = tmp_path / "fsm.db"
    subprocess.run([sys.executable, "-c", HOT_WAL.format(root=str(ROOT), db=str(db))], check=True)
    if os.geteuid() != 0 or subprocess.run(["chattr", flag, str(db)], check=False).returncode:
        unavailable("chattr needs root and a file system that supports it")
    try:
        fsm = [sys.executable, "-m", "fsm", "run", "--db", f"sqlite:///{db}"]
        done = subprocess.run(fsm, capture_output=True, text=True, timeout=60, cwd=ROOT)
    finally:
        subprocess.run(["chattr", flag.replace("+", "-"), str(db)], check=False)
    assert done.returncode == 1, done.stderr
    assert "a worker must write it" in done.stderr and "Traceback" not in done.stderr
