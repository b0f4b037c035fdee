"""The Slurm backend against the real single-node cluster of scripts/slurm-up.sh.

Skipped with the reason on a machine without Slurm; in CI (CI=true) a cluster that is not up
fails them. The `--time` job takes 60-90 s to reach TIMEOUT (Slurm's shortest limit is one
minute and slurmctld checks limits every 30 s), so it is submitted when this module starts and
checked by its last test, while the others run.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.slurm import LocalTransport, SlurmBackend, submit_service
from fsm import Engine
from fsm.worker import Worker, WorkerSettings
from tests.slurm_controller import require_controller, start_controller, stop_controller
from tests.slurm_support import require, settled_cluster_problem, tick_until

pytestmark = pytest.mark.slow
OUTPUT = Path("/tmp/fsm-slurm-tests")
HTTP = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]


@pytest.fixture(scope="module")
def cluster() -> None:
    require(settled_cluster_problem())
    OUTPUT.mkdir(exist_ok=True)


class Rig:
    """Engine on a SQLite file + a worker driving the real cluster, with fast refreshes."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.engine = Engine(f"sqlite:///{path}", refresh_scale=0.1)
        self.backend = SlurmBackend(
            LocalTransport(timeout=timeout),
            health_path="/",
            health_timeout=1.0,
            key_file=f"{path}.key",
        )
        settings = WorkerSettings(max_backoff=1.0)
        self.worker = Worker(self.engine, [self.backend], settings=settings)

    def start(
        self, command: list[str], *, data: dict[str, object] | None = None, **job: object
    ) -> str:
        job_options = {"job_name": "fsm-test", "output": f"{OUTPUT}/%j.out", **job}
        box = {"command": command, "workdir": str(OUTPUT)}
        return submit_service(self.engine, self.worker, self.backend, job_options, box, data=data)

    def job(self, entity_id: str) -> str:
        return str(self.engine.get(entity_id).data["job_id"])

    def until(self, entity_id: str, *states: str, timeout: float = 30) -> str:
        return tick_until(self.worker, self.engine, entity_id, states, timeout)

    def close(self) -> None:
        from fsm.verify import verify_store

        violations = verify_store(self.engine.store, self.engine.lifecycles)
        assert violations == [], [str(v) for v in violations]  # `fsm verify` is clean
        for entity in self.engine.list_entities():
            if not entity.terminal and "job_id" in entity.data:
                self.backend.confirm_and_cancel(entity)
        self.backend.close()
        self.engine.close()


def slurm_state(job: str) -> str:
    done = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return done.stdout.strip() or "GONE"


def wait_slurm(job: str, states: set[str], timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while (state := slurm_state(job)) not in states and time.monotonic() < deadline:
        time.sleep(0.25)
    return state


@pytest.fixture(scope="module")
def rig(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    rig = Rig(tmp_path_factory.mktemp("slurm") / "fsm.db")
    yield rig
    rig.close()


@pytest.fixture(scope="module")
def time_limited(rig: Rig) -> str:
    """A job with --time=1 that ignores it: submitted first, checked last."""
    return rig.start(["sleep", "600"], time="1")


def test_http_service_becomes_healthy_then_stops(rig: Rig, time_limited: str) -> None:
    started = time.monotonic()
    entity_id = rig.start(HTTP)
    assert rig.engine.get(entity_id).state == "PENDING"  # sbatch accepted it: queued
    assert rig.until(entity_id, "HEALTHY") == "HEALTHY"
    path = [t.to_state for t in rig.engine.history(entity_id)]
    assert path[-2:] == ["STARTING", "HEALTHY"] and set(path[:-2]) <= {"PENDING"}
    data = rig.engine.get(entity_id).data
    port = data["port"]
    assert isinstance(port, int) and data["node"]
    healthy_after = time.monotonic() - started
    rig.worker.command(entity_id, "stop")
    assert rig.engine.get(entity_id).state == "STOPPED"
    assert wait_slurm(rig.job(entity_id), {"CANCELLED", "GONE"}) in {"CANCELLED", "GONE"}
    with pytest.raises(OSError):  # the service is really gone
        for _ in range(40):
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                time.sleep(0.25)
    print(f"\nreal cluster: SUBMITTED -> HEALTHY in {healthy_after:.1f}s")


def test_a_job_that_exits_non_zero_fails(rig: Rig) -> None:
    entity_id = rig.start(["bash", "-c", "sleep 1; exit 3"])
    assert rig.until(entity_id, "FAILED", "STOPPED", "TIMEOUT") == "FAILED"
    last = rig.engine.history(entity_id)[-1]
    assert last.event == "job_failed" and last.payload["job_state"] == "FAILED"


def test_no_answer_within_starting_limit_times_out(rig: Rig) -> None:
    entity_id = rig.start(["sleep", "600"], data={"time_limits": {"STARTING": 5}})
    assert rig.until(entity_id, "TIMEOUT", "FAILED", timeout=40) == "TIMEOUT"
    assert "STARTING" in [t.to_state for t in rig.engine.history(entity_id)]
    # the service gave up on the job, so the worker's release cancelled it
    assert wait_slurm(rig.job(entity_id), {"CANCELLED", "GONE"}) in {"CANCELLED", "GONE"}


def test_a_held_job_stays_pending(rig: Rig) -> None:
    entity_id = rig.start(HTTP, hold=True)
    assert rig.until(entity_id, "PENDING") == "PENDING"
    for _ in range(6):
        rig.worker.tick()
        time.sleep(0.25)
    assert rig.engine.get(entity_id).state == "PENDING"
    assert slurm_state(rig.job(entity_id)) == "PENDING"
    rig.worker.command(entity_id, "stop")
    assert wait_slurm(rig.job(entity_id), {"CANCELLED"}) == "CANCELLED"


def test_a_killed_slurmctld_changes_nothing(rig: Rig) -> None:
    require_controller()
    entity_id = rig.start(HTTP)
    rig.until(entity_id, "HEALTHY")
    silent = rig.start(["sleep", "600"])  # running, never answers: its observations fail
    rig.until(silent, "STARTING")
    rig.backend.transport.timeout = 2.0  # squeue waits 9 s for a dead controller
    versions = {e.id: e.version for e in rig.engine.list_entities()}
    stop_controller(signal.SIGTERM)
    try:
        failed = 0
        for _ in range(4):  # one batch at a time: each waits for squeue's timeout
            stats = rig.worker.refresh_batch()
            failed += stats.failed_observations if stats else 0
            assert stats is None or stats.transitions == 0
            time.sleep(0.5)
        assert failed > 0
        after = {e.id: e.version for e in rig.engine.list_entities()}
        assert {k: v for k, v in after.items() if k in versions} == versions
        # squeue fails, but the service's known endpoint still answers its ping: HEALTHY
        assert rig.engine.get(entity_id).state == "HEALTHY"
        assert rig.engine.get(silent).observation_failures > 0
    finally:
        start_controller()
        rig.backend.transport.timeout = 5.0
    deadline = time.monotonic() + 30
    while rig.engine.get(silent).observation_failures:
        assert time.monotonic() < deadline, "refresh did not resume"
        rig.worker.tick()
        time.sleep(0.25)
    assert rig.engine.get(entity_id).state == "HEALTHY"
    rig.worker.command(entity_id, "stop")
    rig.worker.command(silent, "stop")


def test_the_time_limit_ends_in_timeout(rig: Rig, time_limited: str) -> None:
    """Last: the --time=1 job submitted when the module started."""
    state = rig.until(time_limited, "TIMEOUT", "FAILED", "STOPPED", timeout=180)
    assert state == "TIMEOUT"
    last = rig.engine.history(time_limited)[-1]
    assert last.event == "job_timeout" and last.payload["job_state"] == "TIMEOUT"
