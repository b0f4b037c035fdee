"""The same life-cycle through the SSH transport: a real sshd on 127.0.0.1 (scripts/sshd-up.sh)
in front of the real cluster, host keys checked, the service pinged through an ssh tunnel."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.slurm import SlurmBackend, SshTransport, submit_service
from backends.slurm.blackfish import Service
from fsm import Engine
from fsm.worker import Worker, WorkerSettings
from tests.slurm_support import require, settled_cluster_problem, sshd_settings, tick_until

pytestmark = pytest.mark.slow
OUTPUT = Path("/tmp/fsm-slurm-tests")
HTTP = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
JOB = {"job_name": "fsm-ssh", "output": f"{OUTPUT}/%j.out"}


@pytest.fixture(scope="module")
def settings() -> dict[str, str]:
    require(settled_cluster_problem())
    found = sshd_settings()
    if found is None:
        require("no test sshd: run scripts/sshd-up.sh (it writes /tmp/fsm-sshd/env)")
    assert found is not None
    OUTPUT.mkdir(exist_ok=True)
    return found


def transport(settings: dict[str, str], known_hosts: str | None = None) -> SshTransport:
    return SshTransport(
        settings["FSM_SSH_HOST"],
        user=settings["FSM_SSH_USER"],
        port=int(settings["FSM_SSH_PORT"]),
        identity_file=settings["FSM_SSH_KEY"],
        known_hosts_file=known_hosts or settings["FSM_SSH_KNOWN_HOSTS"],
        timeout=15,
    )


class SshRig:
    def __init__(self, path: Path, settings: dict[str, str]) -> None:
        self.engine = Engine(f"sqlite:///{path}", refresh_scale=0.1)
        self.backend = SlurmBackend(
            transport(settings), health_path="/", health_timeout=2.0, key_file=f"{path}.key"
        )
        self.worker = Worker(self.engine, [self.backend], settings=WorkerSettings(max_backoff=1))

    def close(self) -> None:
        for entity in self.engine.list_entities():
            if not entity.terminal and "job_id" in entity.data:
                self.backend.confirm_and_cancel(entity)
        self.backend.close()
        self.engine.close()


@pytest.fixture
def rig(settings: dict[str, str], tmp_path: Path) -> Iterator[SshRig]:
    rig = SshRig(tmp_path / "fsm.db", settings)
    yield rig
    rig.close()


def _alive(pid: int) -> bool:
    try:
        return b"ssh" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _get(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return int(response.status)


def test_the_life_cycle_through_ssh_and_a_tunnel(rig: SshRig) -> None:
    started = time.monotonic()
    entity_id = submit_service(
        rig.engine, rig.worker, rig.backend, JOB, {"command": HTTP, "workdir": str(OUTPUT)}
    )
    assert tick_until(rig.worker, rig.engine, entity_id, {"HEALTHY"}, 40) == "HEALTHY"
    healthy_after = time.monotonic() - started
    data = rig.engine.get(entity_id).data
    tunnel = data["tunnel"]
    assert tunnel["remote_port"] == data["port"] and tunnel["node"] == data["node"]
    assert _alive(tunnel["pid"]) and _get(tunnel["local_port"]) == 200
    # the tunnel dies: the next refresh opens a new one and the service stays HEALTHY
    os.kill(tunnel["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while rig.engine.get(entity_id).data["tunnel"]["pid"] == tunnel["pid"]:
        assert time.monotonic() < deadline, "the dead tunnel was not re-opened"
        rig.worker.tick()
        time.sleep(0.25)
    assert rig.engine.get(entity_id).state == "HEALTHY"
    again = rig.engine.get(entity_id).data["tunnel"]
    assert _alive(again["pid"]) and _get(again["local_port"]) == 200
    rig.worker.command(entity_id, "stop")
    assert rig.engine.get(entity_id).state == "STOPPED"
    assert rig.engine.get(entity_id).data["tunnel"] is None
    time.sleep(0.5)
    assert not _alive(again["pid"])
    job = rig.backend.cluster.squeue([str(data["job_id"])])[str(data["job_id"])]
    assert job.state in ("CANCELLED", "COMPLETING")
    calls = dict(rig.backend.calls)
    print(f"\nover ssh: SUBMITTED -> HEALTHY in {healthy_after:.1f}s, commands run: {calls}")


def test_blackfish_service_over_ssh(rig: SshRig) -> None:
    async def scenario() -> None:
        service = Service(rig.engine, rig.worker, rig.backend)
        await service.start({"command": HTTP, "workdir": str(OUTPUT)}, JOB)
        assert await service.wait(until={"HEALTHY"}, timeout=40, every=0.5) == "HEALTHY"
        tunnel = await service.open_tunnel()
        assert tunnel is not None and _get(tunnel.local_port) == 200
        recorded = rig.engine.get(service.id or "").data["tunnel"]
        assert recorded["pid"] == tunnel.pid
        job = await service.get_job()
        assert job is not None and job.state == "RUNNING" and job.port == tunnel.remote_port
        await service.close_tunnel()
        time.sleep(0.3)
        assert not _alive(tunnel.pid)
        await service.stop()
        assert service.status == "STOPPED"

    asyncio.run(scenario())


def test_an_unknown_host_key_changes_nothing(settings: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    engine = Engine(f"sqlite:///{tmp_path}/fsm.db")
    backend = SlurmBackend(transport(settings, str(empty)))
    try:
        worker = Worker(engine, [backend])
        entity = engine.create(
            "service", {"job_id": "1", "submitted_at": "2026-01-01T00:00:00+00:00"}
        )
        stats = worker.refresh()
        assert stats.failed_observations == 1 and stats.transitions == 0
        assert engine.get(entity.id).state == "SUBMITTED"
        observation = backend.observe([engine.get(entity.id)], engine.clock())[0]
        assert observation.failure == "error"
        assert "Host key verification failed" in observation.detail
    finally:
        backend.close()
        engine.close()
