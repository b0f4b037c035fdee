"""Supervision on the real single-node Slurm cluster, through Blackfish's `Service` API: an
`scancel` of the current attempt's job by someone else is restarted (it was not our stop);
a stop of the supervisor cancels its attempt's job and restarts nothing. One short test, so it
shares the cluster politely with the Slurm backend's own tests."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from backends.slurm import LocalTransport, SlurmBackend
from backends.slurm.blackfish import Service
from fsm import Engine
from fsm.supervisor import Supervisor
from fsm.worker import Worker, WorkerSettings
from tests.slurm_support import require, settled_cluster_problem

pytestmark = pytest.mark.slow
OUTPUT = Path("/tmp/fsm-supervision-tests")
HTTP = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]


def slurm_state(backend: SlurmBackend, job: str) -> str:
    record = backend.cluster.squeue([job]).get(job)
    return record.state if record is not None else "GONE"


def test_scancel_by_someone_else_is_restarted_and_a_stop_restarts_nothing(
    tmp_path: Path,
) -> None:
    require(settled_cluster_problem())
    OUTPUT.mkdir(exist_ok=True)
    engine = Engine(f"sqlite:///{tmp_path}/fsm.db", refresh_scale=0.1)
    backend = SlurmBackend(LocalTransport(timeout=5.0), health_path="/", health_timeout=1.0)
    worker = Worker(engine, [backend], settings=WorkerSettings(max_backoff=1.0))
    service = Service(engine, worker, backend)
    policy = {"max_restarts": 2, "backoff": {"initial": 0.5, "max": 1}}
    job_options = {"job_name": "fsm-supervised", "output": f"{OUTPUT}/%j.out"}
    box = {"command": HTTP, "workdir": str(OUTPUT)}
    try:
        sup_id = asyncio.run(service.keep_running(box, job_options, policy, supervisor_id="bf"))
        node, port = asyncio.run(service.ensure_healthy(timeout=90, every=0.25))
        assert node == engine.get("bf-a1").data["node"]
        assert service.id == "bf-a1" and port == engine.get("bf-a1").data["port"]
        first_job = str(engine.get("bf-a1").data["job_id"])
        subprocess.run(["scancel", first_job], check=True, timeout=20)  # not us: an operator
        deadline = time.monotonic() + 90
        sup = Supervisor(engine, sup_id)
        while len(sup.attempts()) < 2 or sup.current().state != "HEALTHY":  # type: ignore[union-attr]
            assert time.monotonic() < deadline, sup.reason()
            worker.tick()
            time.sleep(0.25)
        first = engine.get("bf-a1")
        assert (first.state, engine.history("bf-a1")[-1].event) == ("STOPPED", "job_cancelled")
        [ended] = [t.payload for t in engine.history(sup_id) if t.event == "attempt_ended"]
        assert (ended["ended"], ended["by"], ended["source"]) == (
            "STOPPED",
            "job_cancelled",
            "slurm",
        )
        asyncio.run(service.ensure_healthy(timeout=30, every=0.25))
        assert service.id == "bf-a2"
        second_job = str(engine.get("bf-a2").data["job_id"])
        assert second_job != first_job
        assert asyncio.run(service.stop_supervised()) == "STOPPING"
        deadline = time.monotonic() + 60
        while sup.state != "STOPPED":
            assert time.monotonic() < deadline, sup.reason()
            worker.tick()
            time.sleep(0.25)
        assert slurm_state(backend, second_job) in ("CANCELLED", "GONE")
        for _ in range(8):
            worker.tick()
            time.sleep(0.25)
        assert [a.entity.state for a in sup.attempts()] == ["STOPPED", "STOPPED"]
        assert engine.verify() == []
    finally:
        for entity in engine.list_entities(lifecycle="service"):
            if not entity.terminal and "job_id" in entity.data:
                backend.confirm_and_cancel(entity)  # only ever a job our tag proves ours
        backend.close()
        engine.close()
