"""Issue 8, items 6 (the database path), 10 and 13: database files are never created through a
link, readers never wait for the writer, and a read-only file system is reported as what it is."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from fsm import DatabaseUnavailable, Engine, StorageError
from fsm.cli import main
from tests.hardening_support import remount, small_fs


def _populate(url: str, count: int = 3) -> list[str]:
    engine = Engine(url)
    try:
        ids = [engine.create("service").id for _ in range(count)]
        engine.fire(ids[0], "job_pending")
        return ids
    finally:
        engine.close()


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- item 10: readers never take the write lock -----------------------------------------------


def test_readers_do_not_wait_for_a_writer_holding_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'fsm.db'}"
    ids = _populate(url)
    writer = sqlite3.connect(tmp_path / "fsm.db", isolation_level=None, timeout=0)
    writer.execute("BEGIN IMMEDIATE")  # a worker in the middle of a batch
    writer.execute("UPDATE entity SET updated_at = updated_at")
    try:
        code, out, err = _cli(capsys, "status", "--db", url, "--json")
        assert (code, err) == (0, ""), err
        assert json.loads(out)["total"] == 3
        code, out, err = _cli(capsys, "verify", "--db", url)
        assert (code, err) == (0, ""), err
        code, out, err = _cli(capsys, "history", ids[0], "--db", url, "--json")
        assert (code, err) == (0, ""), err
        assert json.loads(out)["entity"]["state"] == "PENDING"
        engine = Engine.open_existing(url)
        try:
            assert sum(c.total for c in engine.counts()) == 3
            assert engine.verify() == []
        finally:
            engine.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# -- item 6: never create a database through a link -------------------------------------------


def test_a_dangling_symlink_at_the_database_path_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "victim.db"
    target.parent.mkdir()
    link = tmp_path / "fsm.db"
    link.symlink_to(target)
    old = os.umask(0o022)
    try:
        with pytest.raises(DatabaseUnavailable, match="symbolic link"):
            Engine(f"sqlite:///{link}")
    finally:
        os.umask(old)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_a_link_planted_at_the_journal_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fsm.db'}"
    _populate(url, 1)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for suffix in ("-wal", "-shm"):
        side = tmp_path / f"fsm.db{suffix}"
        side.unlink(missing_ok=True)
        side.symlink_to(victim)
        with pytest.raises(DatabaseUnavailable, match="symbolic link"):
            Engine(url).create("service")
        side.unlink()
    assert victim.read_text() == "precious\n"


def test_a_link_to_an_existing_database_is_opened(tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    _populate(f"sqlite:///{real}", 2)
    link = tmp_path / "fsm.db"
    link.symlink_to(real)
    engine = Engine(f"sqlite:///{link}")
    try:
        assert len(engine.list_entities()) == 2
    finally:
        engine.close()


def test_new_database_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        url = f"sqlite:///{tmp_path / 'fsm.db'}"
        engine = Engine(url)
        engine.create("service")
        modes = {
            p.name: stat.S_IMODE(p.stat().st_mode)
            for p in tmp_path.iterdir()
            if p.name.startswith("fsm.db")
        }
        engine.close()
    finally:
        os.umask(old)
    assert modes and set(modes.values()) == {0o600}, modes


def test_readers_say_what_is_at_a_dangling_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = tmp_path / "fsm.db"
    link.symlink_to(tmp_path / "gone.db")
    code, _, err = _cli(capsys, "status", "--db", f"sqlite:///{link}")
    assert code == 1 and "symbolic link" in err
    assert not (tmp_path / "gone.db").exists()


# -- item 13: a read-only file system ---------------------------------------------------------


def test_a_database_on_a_read_only_file_system_is_read_and_reported_truthfully(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_fs(tmp_path / "ro") as mnt:
        url = f"sqlite:///{mnt / 'fsm.db'}"
        ids = _populate(url)
        remount(mnt, "ro")
        try:
            code, out, err = _cli(capsys, "status", "--db", url, "--json")
            assert (code, err) == (0, ""), err
            assert json.loads(out)["total"] == 3
            code, out, err = _cli(capsys, "history", ids[0], "--db", url)
            assert code == 0 and "PENDING" in out, err
            with pytest.raises(StorageError) as raised:
                Engine(url).create("service")
            message = str(raised.value)
            assert "read-only" in message and "not a SQLite database" not in message
            assert isinstance(raised.value, DatabaseUnavailable)
        finally:
            remount(mnt, "rw")
        assert (mnt / "fsm.db").stat().st_size > 0  # and nothing about it was wrong


def test_a_read_only_copy_with_a_pending_log_is_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database copied with its write-ahead log onto read-only media: SQLite cannot read the
    log without write access; say so instead of calling the file corrupt."""
    src = tmp_path / "src"
    src.mkdir()
    url = f"sqlite:///{src / 'fsm.db'}"
    engine = Engine(url)
    engine.create("service")
    with small_fs(tmp_path / "ro") as mnt:
        for name in ("fsm.db", "fsm.db-wal"):
            (mnt / name).write_bytes((src / name).read_bytes())
            os.chmod(mnt / name, 0o600)
        engine.close()
        remount(mnt, "ro")
        try:
            code, _, err = _cli(capsys, "status", "--db", f"sqlite:///{mnt / 'fsm.db'}")
            assert code == 1
            assert "read-only" in err and "not a SQLite database" not in err
        finally:
            remount(mnt, "rw")


def test_a_file_that_is_not_a_database_is_still_called_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "fsm.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    code, _, err = _cli(capsys, "status", "--db", f"sqlite:///{bogus}")
    assert code == 1 and "not a SQLite database" in err
    with pytest.raises(StorageError, match="not a SQLite database"):
        Engine(f"sqlite:///{bogus}")
