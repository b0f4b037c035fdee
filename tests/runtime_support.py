"""Helpers for tests that run `fsm run` as real processes."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from backends.sim import SimBackend
from fsm import Engine
from storage import queue

ROOT = Path(__file__).resolve().parent.parent


def write_config(path: Path, seed: int, **overrides: Any) -> Path:
    config = {
        "interval": 0.2,
        "refresh_scale": 0.05,
        "lease_seconds": 3,
        "batch_size": 200,
        "backends": [{"kind": "sim", "seed": seed, **overrides.pop("sim", {})}],
        **overrides,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start_worker(db_url: str, config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fsm", "run", "--db", db_url, "--config", str(config), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )


def wait_started(proc: subprocess.Popen[str]) -> None:
    """Read the worker's log until it says it started (its startup time depends on the load of
    the machine, not on the test)."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if " started on " in line:
            return
    raise AssertionError(f"fsm run ended before it started (exit {proc.wait()})")


def wait_ok(proc: subprocess.Popen[str], timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"fsm run did not finish in {timeout}s:\n{err[-3000:]}") from None
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, err[-3000:]


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def assert_ground_truth(engine: Engine, sim: SimBackend) -> None:
    """Final states equal the simulator's truth; histories legal; commands ran exactly once."""
    entities = engine.list_entities()
    wrong = [
        (e.id, e.state, sim.expected_final_state(e))
        for e in entities
        if e.state != sim.expected_final_state(e)
    ]
    assert wrong == [], wrong[:20]
    assert engine.verify() == []
    with engine.store.transaction() as uow:
        commands = queue.list_commands(uow)
    by_entity: dict[str, list[Any]] = defaultdict(list)
    for command in commands:
        assert command.done_at is not None, command
        by_entity[command.entity_id].append(command)
    for entity_id, cmds in by_entity.items():
        history = engine.history(entity_id)
        for command in cmds:
            recorded = [t for t in history if t.source == "schedule" and t.event == command.command]
            refused = (command.outcome or "").startswith("refused")
            expected = 0 if refused else 1
            if command.command in {c.command for c in cmds if c is not command}:
                continue  # the same command twice on one entity: counted together below
            assert len(recorded) == expected, (entity_id, command, recorded)


#: the events by which our own STARTING limit ends a service: the timer's, and a failed ping the
#: `time_limit_exceeded` guard let through. `job_timeout` is the scheduler's own wall-time kill,
#: reported whenever the job ends; it owes nothing to our deadline (a worker that first saw the
#: job running late enters STARTING late, so the job's end can come before our deadline).
LIMIT_EVENTS = frozenset({"time_limit", "ping_failed"})


def assert_deadlines_respected(engine: Engine, slack: float) -> None:
    """Every STARTING -> TIMEOUT our limit made happened at or after the deadline, and not much
    later; at least one did (else the check proved nothing)."""
    checked = 0
    for entity in engine.list_entities(lifecycle="service"):
        history = engine.history(entity.id)
        limit = entity.data.get("time_limits", {}).get("STARTING")
        for previous, t in itertools.pairwise(history):
            if t.from_state == "STARTING" and t.to_state == "TIMEOUT" and limit:
                if t.event not in LIMIT_EVENTS:
                    continue
                entered = max(previous.observed_at, entity.created_at)
                late = (t.observed_at - entered).total_seconds() - limit
                assert -1e-3 <= late <= slack, (entity.id, t.event, late)
                checked += 1
    assert checked > 0, "no service reached TIMEOUT by its STARTING limit"


def lease_intervals(files: list[Path]) -> dict[str, list[tuple[str, datetime, datetime]]]:
    """Per entity: (worker, from, to) of every lease, from the workers' audit files."""
    intervals: dict[str, list[tuple[str, datetime, datetime]]] = defaultdict(list)
    for file in files:
        open_leases: dict[str, tuple[datetime, datetime]] = {}
        worker = ""
        for line in file.read_text().splitlines():
            entry = json.loads(line)
            worker = entry["worker"]
            at = datetime.fromisoformat(entry["at"])
            if "leased" in entry:
                until = datetime.fromisoformat(entry["until"])
                for entity_id in entry["leased"]:
                    if entity_id in open_leases:  # never released: it ran out
                        start, end = open_leases[entity_id]
                        intervals[entity_id].append((worker, start, end))
                    open_leases[entity_id] = (at, until)
            else:
                for entity_id in entry["released"]:
                    start, end = open_leases.pop(entity_id)
                    intervals[entity_id].append((worker, start, min(at, end)))
        for entity_id, (start, end) in open_leases.items():
            intervals[entity_id].append((worker, start, end))
    return intervals
