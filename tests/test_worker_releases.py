"""Durable releases (TEAM contract 1): recorded with the terminal transition, retried with
backoff until the backend confirms, across a real process restart, visible in status/history."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from backends.base import Backend, CommandResult
from backends.sim import SimBackend
from fsm import Engine, ManualClock
from fsm.cli import app
from fsm.observation import Observation
from fsm.worker import Worker, WorkerSettings
from storage import EntityRow, releases
from storage.records import ReleaseRow

HELPER = Path(__file__).with_name("release_worker.py")


class Holding(Backend):
    """Operations that fail on the first look and hold something until `release` confirms;
    `release` raises while `down` is set (the controller is unreachable)."""

    name = "holding"
    lifecycles = frozenset({"operation"})
    releases = True
    commands = frozenset()

    def __init__(self, *, down: int = 0, error: str = "controller down") -> None:
        self.down = down  # how many release attempts fail first
        self.error = error
        self.released: list[str] = []
        self.attempts: list[str] = []

    def observe(self, entities: Sequence[EntityRow], now: datetime) -> list[Observation]:
        return [Observation(e.id, ("fail",), observed_at=now) for e in entities]

    def execute(
        self, entity: EntityRow, command: str, arguments: Any, now: datetime
    ) -> CommandResult:
        return CommandResult()

    def release(self, entity: EntityRow, now: datetime) -> None:
        self.attempts.append(entity.id)
        if self.down > 0:
            self.down -= 1
            raise RuntimeError(self.error)
        self.released.append(entity.id)


@pytest.fixture
def engine(db_url: str, clock: ManualClock) -> Engine:
    eng = Engine(db_url, clock=clock)
    yield eng  # type: ignore[misc]
    eng.close()


def _obligation(engine: Engine, entity_id: str) -> ReleaseRow | None:
    with engine.store.reading() as conn:
        return releases.for_entity(conn, entity_id)


def test_the_obligation_commits_with_the_terminal_transition(engine: Engine) -> None:
    op = engine.create("operation").id
    worker = Worker(engine, [Holding()])
    worker.refresh()  # the terminal transition, and nothing else yet
    assert engine.get(op).state == "FAILED"
    obligation = _obligation(engine, op)
    assert obligation is not None
    assert (obligation.state, obligation.attempts, obligation.released_at) == ("FAILED", 0, None)
    assert worker.open_work() == 1  # not idle while something may still be held


def test_a_release_is_retried_with_backoff_until_it_returns(
    engine: Engine, clock: ManualClock
) -> None:
    backend = Holding(down=4, error="scancel: timed out, token=abc123secret")
    op = engine.create("operation").id
    worker = Worker(engine, [backend], settings=WorkerSettings(max_release_backoff=5.0))
    worker.tick()
    gaps = []
    for _ in range(4):
        obligation = _obligation(engine, op)
        assert obligation is not None and obligation.released_at is None
        gaps.append((obligation.next_attempt_at - clock()).total_seconds())
        assert "abc123secret" not in (obligation.last_error or "")
        clock.now = obligation.next_attempt_at
        worker.tick()
    assert [round(g, 6) >= 0 for g in gaps] == [True] * 4
    assert all(0.5 * min(5.0, 2**i) <= g <= min(5.0, 2**i) for i, g in enumerate(gaps))
    done = _obligation(engine, op)
    assert done is not None and done.released_at is not None and done.attempts == 5
    assert backend.released == [op] and backend.attempts == [op] * 5
    assert worker.open_work() == 0
    worker.tick()
    assert backend.attempts == [op] * 5  # confirmed once: never asked again
    assert engine.verify() == []


def test_backends_that_hold_nothing_get_no_obligation(engine: Engine, clock: ManualClock) -> None:
    op = engine.create("operation").id
    worker = Worker(engine, [SimBackend(operation_seconds=0.1)])
    for _ in range(5):
        worker.tick()
        clock.advance(4)
    assert engine.get(op).terminal
    assert _obligation(engine, op) is None


def test_a_command_that_ends_an_entity_asks_for_its_release(engine: Engine) -> None:
    op = engine.create("operation").id
    backend = Holding()
    worker = Worker(engine, [backend])
    worker.command(op, "cancel")
    assert engine.get(op).state == "CANCELED"
    obligation = _obligation(engine, op)
    assert obligation is not None and obligation.state == "CANCELED"
    worker.run_releases()
    assert backend.released == [op]


def test_a_hung_release_is_abandoned_and_retried(engine: Engine, clock: ManualClock) -> None:
    import threading

    gate = threading.Event()

    class Hangs(Holding):
        release_timeout = 0.3

        def release(self, entity: EntityRow, now: datetime) -> None:
            if not gate.is_set():
                gate.wait()
                return
            super().release(entity, now)

    op = engine.create("operation").id
    backend = Hangs()
    worker = Worker(engine, [backend])
    began = time.monotonic()
    worker.tick()
    assert time.monotonic() - began < 20  # abandoned, not waited for
    obligation = _obligation(engine, op)
    assert obligation is not None and obligation.released_at is None
    assert "no answer within 0.3s" in (obligation.last_error or "")
    gate.set()
    clock.advance(10)
    for _ in range(50):  # the abandoned call returns; the next attempt confirms
        worker.tick()
        if worker.open_work() == 0:
            break
        time.sleep(0.05)
        clock.advance(10)
    assert backend.released == [op]


def test_status_and_history_show_pending_and_done_releases(
    sqlite_url: str, clock: ManualClock
) -> None:
    engine = Engine(sqlite_url, clock=clock)
    op = engine.create("operation", id="op-1").id
    backend = Holding(down=1, error="controller down, password=hunter2")
    worker = Worker(engine, [backend])
    worker.tick()
    runner = CliRunner()
    status = runner.invoke(app, ["status", "--db", sqlite_url])
    assert status.exit_code == 0, status.output
    assert "1 release(s) pending" in status.output and "op-1" in status.output
    shown = runner.invoke(app, ["status", "--db", sqlite_url, "--json"])
    assert json.loads(shown.output)["pending_releases"] == 1
    history = runner.invoke(app, ["history", op, "--db", sqlite_url])
    assert "PENDING (1 attempt(s)" in history.output and "hunter2" not in history.output
    clock.advance(5)
    worker.tick()
    history = runner.invoke(app, ["history", op, "--db", sqlite_url, "--json"])
    record = json.loads(history.output)["release"]
    assert record["released_at"] is not None and record["attempts"] == 2
    status = runner.invoke(app, ["status", "--db", sqlite_url])
    assert "pending" not in status.output
    assert runner.invoke(app, ["verify", "--db", sqlite_url]).exit_code == 0
    engine.close()


@pytest.mark.slow
def test_pending_releases_survive_a_killed_worker(tmp_path: Path) -> None:
    """A worker records obligations while the controller is down and is SIGKILLed; a new
    worker process releases everything once the controller answers."""
    db = f"sqlite:///{tmp_path}/fsm.db"
    down = tmp_path / "controller-down"
    done = tmp_path / "released.txt"
    down.touch()
    env = {**os.environ, "PYTHONPATH": str(HELPER.parent.parent)}
    Engine(db).close()
    args = [sys.executable, str(HELPER), db, str(down), str(done)]
    first = subprocess.Popen(
        [*args, "create"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert first.stdout is not None
    for line in first.stdout:
        if line.startswith("failed-attempts") and int(line.split()[1]) >= 20:
            break
    else:
        raise AssertionError(first.stderr.read() if first.stderr else "no output")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    engine = Engine(db)
    with engine.store.reading() as conn:
        waiting, _ = releases.pending(conn)
    assert waiting == 20 and not done.exists()
    down.unlink()
    second = subprocess.run([*args, "drain"], capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 0, second.stderr
    assert sorted(done.read_text().split()) == sorted(e.id for e in engine.list_entities())
    with engine.store.reading() as conn:
        assert releases.pending(conn)[0] == 0
    assert engine.verify() == []
    engine.close()


class Scripted(Holding):
    """`release` answers from a script of outcomes (True: confirmed), then confirms."""

    def __init__(self, script: list[bool]) -> None:
        super().__init__()
        self.script = list(script)

    def release(self, entity: EntityRow, now: datetime) -> None:
        self.attempts.append(entity.id)
        if self.script and not self.script.pop(0):
            raise ConnectionError("controller down")
        self.released.append(entity.id)


@settings(max_examples=30, deadline=None)
@given(
    script=st.lists(st.booleans(), max_size=40),
    restarts=st.sets(st.integers(0, 60), max_size=6),
    entities=st.integers(1, 6),
)
def test_every_obligation_is_eventually_confirmed_whatever_fails(
    tmp_path_factory: pytest.TempPathFactory, script: list[bool], restarts: set[int], entities: int
) -> None:
    """Releases failing at random and workers replaced at random (a new worker, the old one's
    claims left to expire): every ended entity is confirmed released, nothing else is, and
    an obligation is never attempted again once confirmed."""
    clock = ManualClock()
    folder = tmp_path_factory.mktemp("releases")
    engine = Engine(f"sqlite:///{folder}/fsm.db", clock=clock)
    try:
        backend = Scripted(script)
        ids = [engine.create("operation").id for _ in range(entities)]
        settings_ = WorkerSettings(max_release_backoff=8.0, lease_seconds=5.0)
        worker = Worker(engine, [backend], settings=settings_)
        for tick in range(400):
            if tick in restarts:
                worker = Worker(engine, [backend], settings=settings_)
            worker.tick()
            if worker.open_work() == 0:
                break
            clock.advance(1.0)
        assert worker.open_work() == 0
        assert sorted(backend.released) == sorted(ids)  # each confirmed exactly once
        with engine.store.reading() as conn:
            rows = [releases.for_entity(conn, i) for i in ids]
        assert all(r is not None and r.released_at is not None for r in rows)
        assert sum(r.attempts for r in rows if r) == len(backend.attempts)
        assert engine.verify() == []
    finally:
        engine.close()


def test_pending_releases_are_a_metric(engine: Engine, clock: ManualClock) -> None:
    from fsm.metrics import Metrics

    metrics = Metrics(engine)
    worker = Worker(engine, [Holding(down=1)], listener=metrics)
    engine.create("operation")
    worker.tick()
    metrics.update_entities()
    assert metrics.registry.get_sample_value("fsm_releases_pending") == 1
    clock.advance(5)
    worker.tick()
    metrics.update_entities()
    assert metrics.registry.get_sample_value("fsm_releases_pending") == 0
