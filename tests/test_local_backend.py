"""The local-process backend against real processes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.base import CommandFailed
from backends.local import LocalProcessBackend
from backends.local.process import start_ticks
from fsm import Engine
from fsm.worker import Worker
from tests.local_support import alive, local_rig


def demo_argv(mode: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "backends.local.demo_service",
        "--mode",
        mode,
        "--port",
        "{port}",
        "--boot",
        "0.2",
        *extra,
    ]


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[Engine, Worker, LocalProcessBackend]]:
    with local_rig(tmp_path) as rig:
        yield rig


def start(
    worker: Worker,
    engine: Engine,
    argv: list[str],
    *,
    limit: float = 20,
    health: dict[str, object] | None = None,
) -> str:
    entity = engine.create("service", {"time_limits": {"STARTING": limit}})
    worker.command(
        entity.id, "submit", {"process": {"argv": argv, "health": health or {"http": "/health"}}}
    )
    return entity.id


def until(
    worker: Worker, engine: Engine, entity_id: str, states: set[str], timeout: float = 30
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.tick()
        state = engine.get(entity_id).state
        if state in states:
            return state
        time.sleep(0.1)
    raise AssertionError(f"{entity_id} still {engine.get(entity_id).state}")


def pid_of(engine: Engine, entity_id: str) -> int:
    return int(engine.get(entity_id).data["pid"])


def test_healthy_service_then_stop_kills_the_process(local) -> None:  # type: ignore[no-untyped-def]
    engine, worker, _ = local
    sid = start(worker, engine, demo_argv("healthy"))
    assert engine.get(sid).state == "STARTING"
    assert until(worker, engine, sid, {"HEALTHY"}) == "HEALTHY"
    pid = pid_of(engine, sid)
    assert alive(pid)
    worker.command(sid, "stop")
    assert engine.get(sid).state == "STOPPED"
    assert not alive(pid)
    assert [t.event for t in engine.history(sid)] == ["job_running", "ping_ok", "stop"]


def test_a_crash_is_failed_with_its_exit_code(local) -> None:  # type: ignore[no-untyped-def]
    engine, worker, _ = local
    sid = start(worker, engine, demo_argv("crash", "--crash-after", "1"))
    assert until(worker, engine, sid, {"FAILED"}) == "FAILED"
    last = engine.history(sid)[-1]
    assert (last.event, last.payload) == ("job_failed", {"exit_code": 1})


def test_exiting_by_itself_with_zero_is_still_failed(local) -> None:  # type: ignore[no-untyped-def]
    engine, worker, _ = local
    sid = start(worker, engine, [sys.executable, "-c", "pass"], health={"tcp": True})
    assert until(worker, engine, sid, {"FAILED"}) == "FAILED"
    assert engine.history(sid)[-1].payload == {"exit_code": 0}


def test_silent_service_times_out_and_is_terminated(local) -> None:  # type: ignore[no-untyped-def]
    engine, worker, _ = local
    sid = start(worker, engine, demo_argv("silent"), limit=2)
    pid = pid_of(engine, sid)
    assert until(worker, engine, sid, {"TIMEOUT"}) == "TIMEOUT"
    assert not alive(pid)  # released: nothing keeps running


def test_a_restarted_engine_reattaches(tmp_path: Path, local) -> None:  # type: ignore[no-untyped-def]
    engine, worker, _ = local
    sid = start(worker, engine, demo_argv("healthy"))
    until(worker, engine, sid, {"HEALTHY"})
    # a new engine, backend and worker: the process is not their child
    engine2 = Engine(engine.store.url, refresh_scale=0.05)
    backend2 = LocalProcessBackend(tmp_path / "procs")
    worker2 = Worker(engine2, [backend2])
    [observation] = backend2.observe([engine2.get(sid)], engine2.clock())
    assert observation.events == ("job_running", "ping_ok")
    worker2.command(sid, "stop")
    assert engine2.get(sid).state == "STOPPED"
    backend2.close()
    engine2.close()


def test_a_pid_in_entity_data_is_never_taken_for_ours(local) -> None:  # type: ignore[no-untyped-def]
    engine, worker, backend = local
    me = os.getpid()
    impostor = engine.create("service", {"pid": me, "start_ticks": start_ticks(me), "port": 1})
    [observation] = backend.observe([engine.get(impostor.id)], engine.clock())
    assert observation.events == ()  # never submitted: nothing runs for it
    worker.command(impostor.id, "stop")  # must not signal this test process
    assert alive(me)


@pytest.mark.parametrize(
    "spec",
    [
        {"argv": "python -m http.server"},  # a shell string
        {"argv": []},
        {"argv": ["x"], "env": {"BAD NAME": "1"}},
        {"argv": ["x"], "cwd": "relative/dir"},
        {"argv": ["x"], "health": {"http": "no-slash"}},
        {"argv": ["x"], "port": 70000},
        {"argv": ["x"], "surprise": True},
    ],
)
def test_bad_specs_are_refused_and_nothing_is_recorded(local, spec) -> None:  # type: ignore[no-untyped-def]
    engine, worker, _ = local
    sid = engine.create("service").id
    with pytest.raises(CommandFailed):
        worker.command(sid, "submit", {"process": spec})
    assert engine.get(sid).version == 1 and engine.history(sid) == []
