"""Audit of issue 8, item 12: a database with a damaged page (SQLITE_CORRUPT, "database disk
image is malformed", unlike a file that is not a database at all) is a typed DatabaseCorrupt,
so a worker says why once and exits non-zero instead of failing every tick."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fsm import Engine
from fsm.cli import main

ROOT = Path(__file__).resolve().parent.parent


def damaged_database(folder: Path) -> Path:
    db = folder / "fsm.db"
    engine = Engine(f"sqlite:///{db}")
    for _ in range(50):
        engine.create("service")
    engine.close()
    with db.open("r+b") as raw:  # the entity table's pages: readable header, damaged rows
        raw.seek(4096 * 3)
        raw.write(b"\xde\xad" * 2048)
    return db


def test_status_on_a_damaged_database_says_it_is_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = damaged_database(tmp_path)
    assert main(["status", "--db", f"sqlite:///{db}"]) != 0
    assert "damaged" in capsys.readouterr().err


def test_a_worker_on_a_damaged_database_stops_with_the_reason(tmp_path: Path) -> None:
    db = damaged_database(tmp_path)
    fsm = [sys.executable, "-m", "fsm", "run", "--db", f"sqlite:///{db}", "--exit-when-idle"]
    done = subprocess.run(fsm, capture_output=True, text=True, timeout=90, cwd=ROOT)
    assert done.returncode == 1
    assert "cannot make progress" in done.stderr and "damaged" in done.stderr
    assert done.stderr.count("cannot make progress") == 1
    assert "Traceback" not in done.stderr
