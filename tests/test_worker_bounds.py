"""A worker that cannot be stalled or fooled: hung backends, aliases of one SQLite file, and
inputs that would make it run forever without progress."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from backends.sim import SimBackend, populate
from fsm import Engine, InvalidInput, ManualClock
from fsm.observation import Observation
from fsm.runner import SingleWorkerLock
from fsm.worker import LeaseAudit, Worker, WorkerSettings, WorkerStuck
from storage import EntityRow, WorkerRefused


class HangsForever(SimBackend):
    """A backend whose observe never returns (until the test lets it go)."""

    name = "hangs"
    lifecycles = frozenset({"service"})
    observe_timeout = 0.3

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = 0

    def observe(self, entities: Sequence[EntityRow], now: datetime) -> list[Observation]:
        self.entered += 1
        self.gate.wait()
        return []


class Operations(SimBackend):
    name = "ops"
    lifecycles = frozenset({"operation"})


@pytest.fixture
def hung() -> Iterator[HangsForever]:
    backend = HangsForever()
    yield backend
    backend.gate.set()  # let the abandoned thread end


def test_a_hung_backend_is_abandoned_and_cannot_stall_the_others(
    sqlite_url: str, clock: ManualClock, hung: HangsForever
) -> None:
    engine = Engine(sqlite_url, clock=clock, refresh_scale=0.05)
    sim = Operations(operation_seconds=0.2)
    populate(engine, sim, services=5, operations=5)
    worker = Worker(engine, [hung, sim])
    began = time.monotonic()
    stats = worker.tick()
    first = time.monotonic() - began
    assert stats.failures.get("timeout") == 5  # the hung backend's entities: failed looks
    for _ in range(40):
        clock.advance(0.1)
        worker.tick()
    took = time.monotonic() - began
    ops = engine.list_entities(lifecycle="operation")
    assert all(o.terminal for o in ops)  # the other backend went on
    assert all(s.state == "SUBMITTED" for s in engine.list_entities(lifecycle="service"))
    assert hung.entered == 1  # busy: no second thread piled onto the stuck one
    assert first < 15 and took < 60  # bounded by 0.3 s, not by the hang (generous on 2 CPUs)
    engine.close()


def test_a_hung_command_is_abandoned(sqlite_url: str, hung: HangsForever) -> None:
    class HungCommand(SimBackend):
        command_timeout = 0.3

        def execute(self, entity: Any, command: str, arguments: Any, now: datetime) -> Any:
            hung.gate.wait()

    engine = Engine(sqlite_url)
    sid = engine.create("service").id
    worker = Worker(engine, [HungCommand()])
    with pytest.raises(Exception, match=r"no answer within 0\.3s"):
        worker.command(sid, "stop")
    assert engine.get(sid).state == "SUBMITTED"
    engine.close()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 0.0, "30"])
def test_bad_call_timeouts_are_refused_up_front(sqlite_url: str, bad: object) -> None:
    backend = SimBackend()
    backend.observe_timeout = bad  # type: ignore[assignment]
    engine = Engine(sqlite_url)
    with pytest.raises(InvalidInput, match="observe_timeout"):
        Worker(engine, [backend])
    engine.close()


# -- one worker per SQLite file, whatever its name -------------------------------------------


def test_the_lock_keys_on_the_files_identity(tmp_path: Path) -> None:
    db = tmp_path / "fsm.db"
    Engine(f"sqlite:///{db}").close()
    (tmp_path / "alias.db").symlink_to(db)
    os.link(db, tmp_path / "hard.db")
    other = tmp_path / "sub"
    other.mkdir()
    with SingleWorkerLock(f"sqlite:///{db}"):
        for alias in (tmp_path / "alias.db", tmp_path / "hard.db", other / ".." / "fsm.db"):
            with (
                pytest.raises(WorkerRefused, match=f"pid {os.getpid()}"),
                SingleWorkerLock(f"sqlite:///{alias}"),
            ):
                pass
    with SingleWorkerLock(f"sqlite:///{tmp_path / 'hard.db'}"):
        pass  # given back on exit
    assert not list(tmp_path.glob("*worker-lock*"))  # nothing left behind


def test_a_second_worker_process_through_a_symlink_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "fsm.db"
    Engine(f"sqlite:///{db}").close()
    (tmp_path / "alias.db").symlink_to(db)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from fsm.runner import SingleWorkerLock\n"
            "with SingleWorkerLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)",
            f"sqlite:///{db}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        done = subprocess.run(
            [sys.executable, "-m", "fsm.cli", "run", "--db", f"sqlite:///{tmp_path / 'alias.db'}"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 1, done.stderr
        assert f"pid {holder.pid}" in done.stderr and "Traceback" not in done.stderr
    finally:
        holder.kill()
        holder.wait()
    assert not list(tmp_path.glob("*worker-lock*"))


# -- no running forever without progress -----------------------------------------------------


@pytest.mark.parametrize(
    "field",
    ["lease_seconds", "max_backoff", "max_release_backoff"],
)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 0, True, 1e300])
def test_non_finite_settings_are_typed_errors(field: str, bad: object) -> None:
    with pytest.raises(InvalidInput, match=field):
        WorkerSettings(**{field: bad})  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, 1.5, math.nan, True])
def test_bad_batch_sizes_are_typed_errors(bad: object) -> None:
    with pytest.raises(InvalidInput, match="batch_size"):
        WorkerSettings(batch_size=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("delay", [math.nan, math.inf, -1.0, 1e20, "5"])
def test_schedule_refuses_bad_delays(sqlite_url: str, delay: object) -> None:
    engine = Engine(sqlite_url)
    sid = engine.create("service").id
    with pytest.raises(InvalidInput, match="delay"):
        Worker(engine, [SimBackend()]).schedule(sid, "stop", delay=delay)  # type: ignore[arg-type]
    engine.close()


def test_an_unwritable_lease_audit_is_refused_before_any_lease(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.jsonl"
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    with pytest.raises(WorkerStuck, match="cannot write the lease audit"):
        LeaseAudit(link)  # a planted symlink is not followed
    assert not target.exists()
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(WorkerStuck, match="Not a directory"):
        LeaseAudit(not_a_folder / "audit.jsonl")  # unwritable even for root


def _run_config(tmp_path: Path, **extra: object) -> Path:
    lines = ["backends:", "  - {kind: sim}", "interval: 0.05"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path = tmp_path / "run.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _fsm(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsm.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_nan_lease_seconds_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = _run_config(tmp_path, lease_seconds=".nan")
    done = _fsm(tmp_path, "run", "--config", str(config), "--db", f"sqlite:///{tmp_path}/fsm.db")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if "lease_seconds" in line]) == 1


def test_a_corrupt_database_under_exit_when_idle_stops_with_one_reason(tmp_path: Path) -> None:
    db = tmp_path / "fsm.db"
    engine = Engine(f"sqlite:///{db}")
    populate(engine, SimBackend(), services=300)
    engine.close()
    size = db.stat().st_size
    with db.open("r+b") as raw:  # keep the schema, break the pages the ticks read
        raw.seek(size // 2)
        raw.write(os.urandom(size - size // 2))
    config = _run_config(tmp_path)
    began = time.monotonic()
    done = _fsm(
        tmp_path, "run", "--config", str(config), "--db", f"sqlite:///{db}", "--exit-when-idle"
    )
    assert done.returncode != 0, done.stderr
    assert time.monotonic() - began < 100
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert 1 <= len(lines) <= 3, done.stderr  # why, once (and that it stops), not per tick


# -- the lease audit never reports a lease the database no longer holds ------------------------


class Killed(BaseException):
    """Stands for a SIGKILL right after the batch committed."""


def test_the_audit_gives_leases_back_before_the_commit(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(sqlite_url)
    ids = populate(engine, SimBackend(), services=10)
    audit = LeaseAudit(tmp_path / "audit.jsonl")
    worker = Worker(engine, [SimBackend()], listener=audit)

    def die(batch: object) -> None:
        raise Killed

    monkeypatch.setattr(engine, "committed", die)
    with pytest.raises(Killed):
        worker.refresh_batch()
    assert all(e.lease_owner is None for e in engine.list_entities())  # committed
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [sorted(line.get("leased") or line["released"]) for line in lines] == [sorted(ids)] * 2
    audit.close()
    engine.close()
