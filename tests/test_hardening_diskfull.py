"""Issue 8, item 15: on a nearly full disk the write-ahead log must not eat the free space; a
real small file system (tmpfs) stands in for the disk."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from backends.sim import SimBackend, populate
from fsm import DatabaseUnavailable, Engine, Event, ManualClock, NewEntity, StorageError, Worker
from tests.hardening_support import ballast, flip_engine, free_bytes, small_fs

MB = 2**20


def _writes(engine: Engine, ids: list[str], rounds: int, clock: ManualClock) -> tuple[int, int]:
    """In-place writes: data of the same size, no transition rows (the database stays small)."""
    ok = failed = 0
    for n in range(rounds):
        clock.advance(1)
        try:
            engine.apply([Event(i, "note", data={"n": f"{n % 10}" * 100}) for i in ids])
            ok += 1
        except StorageError:
            failed += 1
    return ok, failed


def test_a_small_database_keeps_working_with_three_megabytes_free(tmp_path: Path) -> None:
    with small_fs(tmp_path / "disk", "12m") as mnt:
        clock = ManualClock()
        engine = flip_engine(f"sqlite:///{mnt / 'fsm.db'}", clock=clock)
        try:
            ids = [e.id for e in engine.create_many([NewEntity("flip") for _ in range(300)])]
            ballast(mnt, 3 * MB)
            ok, failed = _writes(engine, ids, 200, clock)
            assert (ok, failed) == (200, 0)
            assert free_bytes(mnt) > MB  # the log did not take what was free
            assert engine.verify() == []
        finally:
            engine.close()


def test_after_the_disk_filled_up_freeing_a_little_space_is_enough(tmp_path: Path) -> None:
    with small_fs(tmp_path / "disk", "12m") as mnt:
        clock = ManualClock()
        engine = flip_engine(f"sqlite:///{mnt / 'fsm.db'}", clock=clock)
        try:
            ids = [e.id for e in engine.create_many([NewEntity("flip") for _ in range(300)])]
            filler = ballast(mnt, 0)  # completely full
            ok, failed = _writes(engine, ids, 5, clock)
            assert ok == 0 and failed == 5
            with pytest.raises(DatabaseUnavailable, match="full"):
                engine.fire(ids[0], "flip")
            filler.unlink()
            ballast(mnt, MB)  # the operator frees one megabyte only
            ok, failed = _writes(engine, ids, 100, clock)
            assert (ok, failed) == (100, 0)
            assert engine.verify() == []
        finally:
            engine.close()


def test_the_worker_recovers_on_a_nearly_full_disk(tmp_path: Path) -> None:
    with small_fs(tmp_path / "disk", "16m") as mnt:
        clock = ManualClock()
        engine = Engine(f"sqlite:///{mnt / 'fsm.db'}", clock=clock)
        try:
            sim = SimBackend(seed=3)
            populate(engine, sim, services=500)
            worker = Worker(engine, [sim])
            ballast(mnt, 2 * MB)
            errors = 0
            for _ in range(200):
                clock.advance(5)
                try:
                    worker.tick()
                except StorageError:
                    errors += 1
            assert errors == 0
            assert worker.open_work() == 0  # every service reached its end
            assert engine.verify() == []
            assert clock() - engine.get("sim-svc-000000").created_at >= timedelta(minutes=16)
        finally:
            engine.close()
