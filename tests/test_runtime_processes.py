"""`fsm run` as real processes: graceful restart, 20 SIGKILLs, four workers on PostgreSQL."""

from __future__ import annotations

import itertools
import random
import signal
import time
from pathlib import Path

import pytest

from backends.sim import SimBackend, populate
from fsm import Engine
from tests.runtime_support import (
    assert_deadlines_respected,
    assert_ground_truth,
    lease_intervals,
    start_worker,
    wait_ok,
    wait_started,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.slow


def _transitions(engine: Engine) -> int:
    return sum(e.seq for e in engine.list_entities())


def test_graceful_stop_and_restart_finish_every_lifecycle(db_url: str, tmp_path: Path) -> None:
    seed, scale = 21, 1.5
    engine = Engine(db_url)
    sim = SimBackend(seed, time_scale=scale)
    populate(engine, sim, services=300, hosts=5, stop_every=13)
    config = write_config(tmp_path / "run.yaml", seed, sim={"time_scale": scale})

    first = start_worker(db_url, config)
    wait_until(lambda: _transitions(engine) > 300, 30, "the first worker to make progress")
    first.send_signal(signal.SIGTERM)
    wait_ok(first, 20)  # exits 0 after the batch in flight
    assert engine.list_entities(lifecycle="service")
    assert all(e.lease_owner is None for e in engine.list_entities())  # leases given back
    assert any(not e.terminal for e in engine.list_entities())  # stopped mid-way

    second = start_worker(db_url, config, "--exit-when-idle")
    wait_ok(second, 120)
    assert_ground_truth(engine, SimBackend(seed, time_scale=scale))
    assert_deadlines_respected(engine, slack=3.0)
    engine.close()


def test_twenty_sigkills_under_load_lose_nothing(db_url: str, tmp_path: Path) -> None:
    seed, scale = 33, 2.5
    engine = Engine(db_url)
    sim = SimBackend(seed, time_scale=scale)
    populate(engine, sim, services=400, hosts=6, stop_every=11)
    config = write_config(tmp_path / "run.yaml", seed, sim={"time_scale": scale})
    rng = random.Random(seed)
    progress = []
    for _ in range(20):
        proc = start_worker(db_url, config)
        wait_started(proc)  # killed while working, however long the start took
        time.sleep(rng.uniform(0.8, 2.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        assert engine.verify() == []
        progress.append(_transitions(engine))
    assert progress[-1] > progress[0]  # the killed workers were really working
    final = start_worker(db_url, config, "--exit-when-idle")
    wait_ok(final, 180)
    assert_ground_truth(engine, SimBackend(seed, time_scale=scale))
    engine.close()


@pytest.mark.postgres
def test_four_workers_share_ten_thousand_entities_and_survive_a_kill(
    pg_url: str, tmp_path: Path
) -> None:
    seed, scale = 44, 3.0
    engine = Engine(pg_url)
    sim = SimBackend(seed, time_scale=scale)
    populate(engine, sim, services=10_000, stop_every=97)
    config = write_config(
        tmp_path / "run.yaml",
        seed,
        sim={"time_scale": scale},
        refresh_scale=0.1,
        batch_size=250,
    )
    audits = [tmp_path / f"leases-{i}.jsonl" for i in range(4)]
    workers = [
        start_worker(
            pg_url,
            config,
            "--exit-when-idle",
            "--worker-id",
            f"w{i}",
            "--lease-audit",
            str(audits[i]),
        )
        for i in range(4)
    ]
    wait_until(lambda: audits[3].exists() and audits[3].stat().st_size > 0, 60, "w3 to lease")
    time.sleep(2.0)
    workers[3].send_signal(signal.SIGKILL)
    workers[3].wait(timeout=10)
    for proc in workers[:3]:
        wait_ok(proc, 300)

    assert_ground_truth(engine, SimBackend(seed, time_scale=scale))
    intervals = lease_intervals(audits)
    overlaps = []
    for entity_id, leases in intervals.items():
        leases.sort(key=lambda lease: lease[1])
        for (w1, _, end1), (w2, start2, _) in itertools.pairwise(leases):
            if w1 != w2 and start2 < end1:
                overlaps.append((entity_id, w1, w2, end1, start2))
    assert overlaps == []
    dead_last = {
        entity_id
        for entity_id, leases in intervals.items()
        if leases and max(leases, key=lambda lease: lease[1])[0] == "w3"
    }
    taken_over = [
        entity_id
        for entity_id, leases in intervals.items()
        if any(w == "w3" for w, _, _ in leases)
        and any(
            w != "w3" and s >= max(e for ww, _, e in leases if ww == "w3") for w, s, _ in leases
        )
    ]
    assert taken_over, "nothing the dead worker held was taken over"
    assert not dead_last - {e.id for e in engine.list_entities() if e.terminal}
    busy = {w for leases in intervals.values() for w, _, _ in leases}
    assert busy == {"w0", "w1", "w2", "w3"}
    engine.close()


def test_metrics_port_shows_the_counters_moving(sqlite_url: str, tmp_path: Path) -> None:
    import re
    import urllib.request

    from backends.local.health import free_port

    seed = 5
    engine = Engine(sqlite_url)
    populate(engine, SimBackend(seed), services=100)
    port = free_port()
    proc = start_worker(
        sqlite_url, write_config(tmp_path / "run.yaml", seed), "--metrics-port", str(port)
    )

    def transitions_counted() -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        values = re.findall(r"^fsm_transitions_total\{.*\} (\S+)$", text, re.MULTILINE)
        return sum(float(v) for v in values)

    try:
        wait_until(lambda: transitions_counted() > 0, 30, "the first counted transitions")
        first = transitions_counted()
        wait_until(lambda: transitions_counted() > first, 30, "the counters to move")
        counted = transitions_counted()
        recorded = sum(e.seq for e in engine.list_entities())  # read after: only grows
        assert 0 < counted <= recorded  # it counts what was really recorded
    finally:
        proc.send_signal(signal.SIGTERM)
        wait_ok(proc, 20)
    engine.close()
