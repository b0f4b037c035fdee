"""The Slurm backend against the recorded-output fake controller: call counts, the life-cycle
through Worker + Engine, failures that change nothing, commands, the Blackfish API."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backends.base import CommandFailed
from backends.slurm import ScriptError, SlurmBackend, submit_service
from backends.slurm.blackfish import Service
from backends.slurm.fake import FakeSlurm
from fsm import Engine, FsmError, InvalidEvent, ManualClock
from fsm.config import make_backend
from fsm.worker import Worker, WorkerSettings
from tests.slurm_support import http_server

JOB = {"job_name": "svc", "time": "60"}
BOX = {"command": ["python3", "-m", "http.server", "{port}"]}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 1, tzinfo=UTC))


@pytest.fixture
def engine(tmp_path: Path, clock: ManualClock) -> Iterator[Engine]:
    eng = Engine(f"sqlite:///{tmp_path}/fsm.db", clock=clock)
    yield eng
    eng.close()


@pytest.fixture
def fake() -> FakeSlurm:
    return FakeSlurm()


@pytest.fixture
def backend(fake: FakeSlurm, engine: Engine) -> SlurmBackend:
    return SlurmBackend(fake, ping_host="127.0.0.1", health_timeout=1, lost_after=60)


@pytest.fixture
def worker(engine: Engine, backend: SlurmBackend) -> Worker:
    # fixed batches of 100: these tests count the Slurm calls of each batch, so the worker's own
    # sizing (which grows batches that run fast) must not merge two batches into one
    settings = WorkerSettings(max_backoff=5, batch_size=100, max_batches_per_tick=50)
    return Worker(engine, [backend], settings=settings)


def step(worker: Worker, clock: ManualClock, seconds: float = 60) -> None:
    """Let time pass so everything is due, then one tick."""
    clock.advance(seconds)
    worker.tick()


def start(engine: Engine, worker: Worker, backend: SlurmBackend, **data: object) -> str:
    return submit_service(engine, worker, backend, JOB, BOX, data=data or None)


def job_of(engine: Engine, entity_id: str) -> str:
    return str(engine.get(entity_id).data["job_id"])


# -- one squeue per cycle ----------------------------------------------------------------------


def test_two_hundred_jobs_cost_one_squeue(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    ids = [start(engine, worker, backend) for _ in range(200)]
    for n, entity_id in enumerate(ids):
        fake.set_state(job_of(engine, entity_id), ["PENDING", "RUNNING", "FAILED"][n % 3])
    backend.calls.clear()
    clock.advance(60)
    stats = worker.refresh()
    assert stats.claimed == 200 and stats.backend_calls == 2  # batches of 100
    assert backend.calls["squeue"] == 2
    # the jobs that ended: one more call per batch for their exit codes (the first also
    # learns that accounting is off: sacct says so, scontrol answers)
    assert backend.calls["scontrol"] == 2 and backend.calls["sacct"] == 1
    assert backend.calls["grep"] == 2  # the ports of the running jobs, once per batch
    assert not {"sbatch", "scancel"} & set(backend.calls)
    failed = [engine.get(i) for i in ids[2::3]]
    assert {e.state for e in failed} == {"FAILED"}
    assert all(engine.history(e.id)[-1].payload["exit_code"] == "0:0" for e in failed)
    backend.calls.clear()
    clock.advance(60)
    stats = worker.refresh()
    assert stats.claimed == 134 and backend.calls["squeue"] == 2 and backend.cycle_calls == 1
    assert not {"sacct", "scontrol", "sbatch", "scancel"} & set(backend.calls)  # grep: no port yet


def test_vanished_jobs_cost_one_more_call(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    ids = [start(engine, worker, backend) for _ in range(50)]
    for entity_id in ids[:20]:
        job = job_of(engine, entity_id)
        fake.set_state(job, "CANCELLED")
        fake.forget(job)
    clock.advance(120)
    entities = [engine.get(i) for i in ids]
    backend.observe(entities, clock())  # learns that accounting is off (sacct says so)
    assert backend.cycle_calls == 3 and backend.accounting is False  # and asks scontrol
    observations = backend.observe(entities, clock())
    assert backend.cycle_calls == 2
    assert fake.log[-1][:3] == ("scontrol", "show", "job")
    lost = [o for o in observations if o.entity_id in ids[:20]]
    assert all(o.events == ("job_failed",) for o in lost)  # ended, cause unknown
    assert all("unknown" in o.payload["cause"] for o in lost if o.payload)


def test_sacct_is_bounded_by_the_submit_time(
    engine: Engine, fake: FakeSlurm, clock: ManualClock
) -> None:
    fake.accounting = True
    backend = SlurmBackend(fake, lost_after=60)
    entity_id = submit_service(engine, Worker(engine, [backend]), backend, JOB, BOX)
    job = job_of(engine, entity_id)
    fake.set_state(job, "CANCELLED")
    fake.forget(job)
    clock.advance(30)
    observation = backend.observe([engine.get(entity_id)], clock())[0]
    sacct = fake.log[-1]
    assert sacct[0] == "sacct"
    since = sacct[sacct.index("-S") + 1]
    submitted = datetime.fromisoformat(engine.get(entity_id).data["submitted_at"])
    assert since == (submitted - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert observation.events == ("job_cancelled",)  # "CANCELLED by 0"
    # a job id recycled from long before the bound is not taken for ours
    fake.jobs[job].submitted = submitted - timedelta(days=30)
    clock.advance(120)  # past lost_after
    observation = backend.observe([engine.get(entity_id)], clock())[0]
    assert observation.events == ("job_failed",)
    assert "unknown" in (observation.payload or {})["cause"]


def test_a_job_not_listed_yet_is_not_lost(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    entity_id = start(engine, worker, backend)
    fake.forget(job_of(engine, entity_id))
    clock.advance(10)  # < lost_after
    for _ in range(2):
        observation = backend.observe([engine.get(entity_id)], clock())[0]
        assert observation.failure == "missing"


# -- the life-cycle through the worker ------------------------------------------------------


def test_the_documented_life_cycle(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    entity_id = start(engine, worker, backend)
    job = job_of(engine, entity_id)
    assert [t.to_state for t in engine.history(entity_id)] == ["PENDING"]  # sbatch: queued
    step(worker, clock)
    assert engine.get(entity_id).state == "PENDING"
    with http_server() as port:
        fake.set_state(job, "RUNNING")  # no port file yet
        step(worker, clock)
        assert engine.get(entity_id).state == "STARTING"
        fake.jobs[job].port = port
        step(worker, clock)
        assert engine.get(entity_id).state == "HEALTHY"
        assert engine.get(entity_id).data["port"] == port
    step(worker, clock)  # the server is gone
    assert engine.get(entity_id).state == "UNHEALTHY"
    fake.set_state(job, "REQUEUED", start="N/A", node="")
    step(worker, clock)
    assert engine.get(entity_id).state == "PENDING"
    assert engine.get(entity_id).data["port"] is None  # a new run reports a new port
    with http_server() as port:
        fake.set_state(job, "RUNNING", start="2026-03-01T01:00:00", port=port)
        step(worker, clock)
        assert engine.get(entity_id).state == "HEALTHY"  # STARTING, then HEALTHY, one tick
        assert engine.get(entity_id).data["port"] == port
    fake.set_state(job, "NODE_FAIL")
    step(worker, clock)
    assert engine.get(entity_id).state == "FAILED"
    path = [t.to_state for t in engine.history(entity_id)]
    assert path == [
        "PENDING", "STARTING", "HEALTHY", "UNHEALTHY", "PENDING", "STARTING", "HEALTHY", "FAILED"
    ]  # fmt: skip
    assert "UNHEALTHY" not in path[: path.index("HEALTHY")]  # STARTING never became UNHEALTHY


@pytest.mark.parametrize(
    ("state", "final"),
    [
        ("COMPLETED", "FAILED"),
        ("CANCELLED", "STOPPED"),
        ("TIMEOUT", "TIMEOUT"),
        ("DEADLINE", "TIMEOUT"),
        ("OUT_OF_MEMORY", "FAILED"),
    ],
)
def test_how_jobs_end(
    engine: Engine,
    worker: Worker,
    backend: SlurmBackend,
    fake: FakeSlurm,
    clock: ManualClock,
    state: str,
    final: str,
) -> None:
    entity_id = start(engine, worker, backend)
    fake.set_state(job_of(engine, entity_id), "RUNNING")
    step(worker, clock)
    fake.set_state(job_of(engine, entity_id), state)
    step(worker, clock)
    assert engine.get(entity_id).state == final


def test_an_unknown_state_is_logged_and_changes_nothing(
    engine: Engine,
    worker: Worker,
    backend: SlurmBackend,
    fake: FakeSlurm,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entity_id = start(engine, worker, backend)
    fake.set_state(job_of(engine, entity_id), "RUNNING")
    step(worker, clock)
    fake.set_state(job_of(engine, entity_id), "QUANTUM_ENTANGLED")
    with caplog.at_level(logging.WARNING):
        step(worker, clock)
    assert engine.get(entity_id).state == "STARTING"
    assert "QUANTUM_ENTANGLED" in caplog.text


def test_starting_time_limit_and_the_job_is_cancelled(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    entity_id = start(engine, worker, backend, time_limits={"STARTING": 5})
    job = job_of(engine, entity_id)
    fake.set_state(job, "PENDING")
    step(worker, clock, 3600)  # queue time does not count
    fake.set_state(job, "RUNNING")
    step(worker, clock, 11)
    assert engine.get(entity_id).state == "STARTING"
    step(worker, clock, 10)  # the ping still fails, now past the limit
    assert engine.get(entity_id).state == "TIMEOUT"
    assert fake.jobs[job].state == "CANCELLED"  # released: the backend scancel'd the job


def test_a_controller_outage_changes_nothing(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    ids = [start(engine, worker, backend) for _ in range(3)]
    with http_server() as port:
        for entity_id in ids:
            fake.set_state(job_of(engine, entity_id), "RUNNING", port=port)
        step(worker, clock)
        assert {engine.get(i).state for i in ids} == {"HEALTHY"}
        fake.stop_controller()
        fake.set_state(job_of(engine, ids[0]), "FAILED")  # happens while we cannot see it
        for _ in range(2):  # squeue fails, but the known endpoints still answer their pings
            clock.advance(600)
            stats = worker.tick()
            assert stats.failed_observations == 0
            assert {engine.get(i).state for i in ids} == {"HEALTHY"}
    before = {i: engine.get(i).version for i in ids}
    for _ in range(3):  # neither squeue nor the ping answer: nothing changes
        clock.advance(600)
        stats = worker.tick()
        assert stats.failed_observations == 3 and stats.transitions == 0
    assert {i: engine.get(i).version for i in ids} == before
    assert all(engine.get(i).observation_failures == 3 for i in ids)
    fake.start_controller()
    step(worker, clock, 600)
    assert engine.get(ids[0]).state == "FAILED"
    assert engine.get(ids[1]).state == "UNHEALTHY"  # the job runs, the service does not answer
    assert engine.get(ids[1]).observation_failures == 0


def test_a_slow_controller_is_a_timeout(engine: Engine, clock: ManualClock) -> None:
    fake = FakeSlurm(down_delay=9, timeout=0.2)
    backend = SlurmBackend(fake)
    worker = Worker(engine, [backend])
    entity_id = submit_service(engine, worker, backend, JOB, BOX)
    fake.stop_controller()
    observation = backend.observe([engine.get(entity_id)], clock())[0]
    assert observation.failure == "timeout"


def test_garbage_from_squeue_changes_nothing(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    entity_id = start(engine, worker, backend)
    fake.garbage = "Last login: yesterday\n1|RUNNING|n|N/A|None\n"
    clock.advance(60)
    stats = worker.tick()
    assert stats.failures == {"garbage": 1}
    assert engine.get(entity_id).state == "PENDING"
    assert len(engine.history(entity_id)) == 1


# -- commands ---------------------------------------------------------------------------------


def test_stop_cancels_and_is_idempotent(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    entity_id = start(engine, worker, backend)
    job = job_of(engine, entity_id)
    fake.set_state(job, "RUNNING")
    step(worker, clock)
    worker.command(entity_id, "stop")
    assert engine.get(entity_id).state == "STOPPED"
    assert fake.jobs[job].state == "CANCELLED"
    backend.execute(engine.get(entity_id), "stop", {}, clock())  # again: no error
    with pytest.raises(InvalidEvent):  # a final status cannot be left
        worker.command(entity_id, "stop")


def test_a_retried_submit_adopts_its_job(
    engine: Engine, backend: SlurmBackend, fake: FakeSlurm
) -> None:
    first = backend.submit_job("svc-1", {"job_options": JOB, "container_options": BOX})
    again = backend.submit_job("svc-1", {"job_options": JOB, "container_options": BOX})
    assert first == again and fake.count("sbatch") == 1
    assert fake.jobs[first].comment == backend.tag("svc-1")
    assert fake.jobs[first].name == "svc." + backend.tag("svc-1")


def test_a_reused_entity_id_never_adopts_the_old_entitys_job(
    engine: Engine, backend: SlurmBackend, fake: FakeSlurm
) -> None:
    """The same id in a new database (or a supervisor's attempt ids again) carries the same tag:
    a job of ours still listed under it, submitted before this entity existed, is not its job."""
    arguments = {"job_options": JOB, "container_options": BOX}
    old = backend.submit_job("svc-1", arguments)
    fake.jobs[old].submitted = datetime.now(UTC) - timedelta(hours=1)
    new = backend.submit_job("svc-1", arguments, datetime.now(UTC))
    assert new != old and fake.count("sbatch") == 2
    assert backend.submit_job("svc-1", arguments, datetime.now(UTC) - timedelta(minutes=1)) == new


def test_lost_after_counts_from_when_the_job_was_last_seen(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    """A long-running service whose job record vanishes is not FAILED on the first cycle."""
    entity_id = start(engine, worker, backend)
    job = job_of(engine, entity_id)
    with http_server() as port:
        fake.set_state(job, "RUNNING", port=port)
        for _ in range(20):  # ten minutes HEALTHY: far past lost_after since the submit
            step(worker, clock, 30)
        assert engine.get(entity_id).state == "HEALTHY"
        fake.forget(job)
        fake.jobs[job].port = None
        step(worker, clock, 30)
        assert engine.get(entity_id).state == "HEALTHY"  # 30 s unseen < lost_after (60 s)
        step(worker, clock, 40)
    assert engine.get(entity_id).state == "FAILED"
    assert "unknown" in engine.history(entity_id)[-1].payload["cause"]


def test_ping_host_maps_node_names_to_addresses(
    engine: Engine, fake: FakeSlurm, clock: ManualClock
) -> None:
    """Node names squeue prints may not resolve from here: `ping_host` maps them."""
    mapped = SlurmBackend(fake, ping_host={"node01": "127.0.0.1"}, health_path="/")
    unmapped = SlurmBackend(fake, health_path="/", health_timeout=0.5)
    worker = Worker(engine, [mapped])
    entity_id = submit_service(engine, worker, mapped, JOB, BOX)
    with http_server() as port:
        fake.set_state(job_of(engine, entity_id), "RUNNING", node="node01", port=port)
        seen = unmapped.observe([engine.get(entity_id)], clock())[0]
        assert seen.events == ("job_running", "ping_failed")  # "node01" does not resolve
        step(worker, clock)
    assert engine.get(entity_id).state == "HEALTHY"


def test_blackfish_refresh_asks_the_job_when_the_ping_fails(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm
) -> None:
    async def scenario() -> None:
        service = Service(engine, worker, backend)
        await service.start(BOX, JOB, timeout=0)
        job = await service.get_job()
        assert job is not None
        with http_server() as port:
            fake.set_state(job.job_id, "RUNNING", port=port)
            assert await service.refresh() == "HEALTHY"
        fake.set_state(job.job_id, "TIMEOUT")  # the ping fails now: the job says why
        before = fake.count("squeue")
        assert await service.refresh() == "TIMEOUT"
        assert fake.count("squeue") == before + 1

    asyncio.run(scenario())


def test_a_submit_looks_only_for_its_own_job_name(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm
) -> None:
    """No full listing per submit: the retry check asks for that one job name, as our user."""
    for _ in range(3):
        start(engine, worker, backend)
    listings = [argv for argv in fake.log if argv[0] == "squeue"]
    assert len(listings) == 3 and fake.count("sbatch") == 3
    for argv in listings:
        assert "--me" in argv and argv[argv.index("--name") + 1].startswith("svc.fsm")


def test_a_hung_squeue_costs_at_most_the_cycle_budget(engine: Engine, clock: ManualClock) -> None:
    fake = FakeSlurm(down_delay=60, timeout=30)
    backend = SlurmBackend(fake, observe_timeout=0.5)
    entity_id = submit_service(engine, Worker(engine, [backend]), backend, JOB, BOX)
    fake.stop_controller()
    begin = time.monotonic()
    observation = backend.observe([engine.get(entity_id)], clock())[0]
    assert observation.failure == "timeout" and time.monotonic() - begin < 5


def test_invalid_options_submit_nothing(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm
) -> None:
    with pytest.raises(ScriptError):
        submit_service(engine, worker, backend, {"time": "1\n#SBATCH --x"}, BOX)
    assert fake.count("sbatch") == 0 and engine.counts() == []


def test_submit_is_a_worker_command(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm
) -> None:
    """The backend's own command: sbatch's job id is recorded with job_pending."""
    entity = engine.create("service", {"time_limits": {"STARTING": 60}})
    arguments = {"job_options": JOB, "container_options": BOX}
    worker.command(entity.id, "submit", arguments)
    after = engine.get(entity.id)
    assert after.state == "PENDING" and after.data["job_id"] in fake.jobs
    assert engine.history(entity.id)[-1].event == "job_pending"
    assert worker.command(entity.id, "submit", arguments) == []  # a retry: recorded already
    assert fake.count("sbatch") == 1
    fake.jobs[after.data["job_id"]].state = "CANCELLED"
    stopped = engine.create("service", {})
    worker.command(stopped.id, "stop")
    with pytest.raises(CommandFailed):  # a finished service is never submitted again
        worker.command(stopped.id, "submit", arguments)
    assert fake.count("sbatch") == 1


def test_from_config_and_the_entry_point() -> None:
    backend = make_backend(
        {
            "kind": "slurm",
            "health_path": "/health",
            "accounting": False,
            "bin_dir": "/opt/slurm/bin",
            "command_paths": {"sacct": "/usr/local/bin/sacct"},
            "ping_host": {"gpu01": "10.0.0.1"},
            "observe_timeout": 10,
            "transport": {
                "kind": "ssh",
                "host": "login.example.org",
                "user": "svc",
                "known_hosts_file": "/etc/fsm/known_hosts",
            },
        }
    )
    try:
        assert isinstance(backend, SlurmBackend) and backend.observer.tunnel
        assert backend.transport.checking == "yes"  # type: ignore[attr-defined]
        assert backend.observe_timeout == 10 and backend.accounting is False
        settings = backend.settings
        assert settings.command_path("squeue") == "/opt/slurm/bin/squeue"
        assert settings.command_path("sacct") == "/usr/local/bin/sacct"
        assert settings.command_path("grep") == "grep"
        assert settings.ping_address("gpu01") == "10.0.0.1"
        assert settings.ping_address("gpu02") == "gpu02"
    finally:
        backend.close()
    with pytest.raises(ValueError, match="unknown"):
        SlurmBackend.from_config({"kind": "slurm", "bogus": 1})
    for bad in (
        {"bin_dir": "relative/bin"},
        {"command_paths": {"sbatch": "sbatch; rm -rf /"}},
        {"command_paths": {"bash": "/bin/bash"}},
        {"ping_host": {"gpu01": "-oProxyCommand=x"}},
        {"observe_timeout": 0},
        {"health_path": "health"},
    ):
        with pytest.raises(ValueError, match="invalid slurm backend settings"):
            SlurmBackend.from_config({"kind": "slurm", **bad})
    with pytest.raises(ValueError, match="ssh host"):
        SlurmBackend.from_config({"transport": {"kind": "ssh", "host": "-oProxyCommand=x"}})


# -- the Blackfish API ------------------------------------------------------------------------


def test_blackfish_service(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    async def scenario() -> None:
        service = Service(engine, worker, backend)
        assert await service.start(BOX, JOB, timeout=0) == "PENDING"  # waited 0 s
        assert service.status == "PENDING"
        job = await service.get_job()
        assert job is not None and job.state == "PENDING"
        assert await service.refresh() == "PENDING"
        with http_server() as port:
            fake.set_state(job.job_id, "RUNNING", port=port)
            assert await service.refresh() == "HEALTHY"
            # Blackfish's documented order: ping first; a good ping needs no squeue
            before = fake.count("squeue")
            assert await service.refresh() == "HEALTHY"
            assert fake.count("squeue") == before
            assert await service.open_tunnel() is None  # local cluster: no tunnel needed
            await service.stop(delay=30)
            assert service.status == "HEALTHY"  # the stop is scheduled, persisted
            clock.advance(31)
            worker.tick()
        assert service.status == "STOPPED"
        assert fake.jobs[job.job_id].state == "CANCELLED"
        await service.stop()  # final: nothing to do
        assert [t.event for t in engine.history(service.id or "")][-1] == "stop"

    asyncio.run(scenario())


@pytest.mark.parametrize(("flag", "final"), [("timeout", "TIMEOUT"), ("failed", "FAILED")])
def test_blackfish_stop_flags(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, flag: str, final: str
) -> None:
    async def scenario() -> None:
        service = Service(engine, worker, backend)
        await service.start(BOX, JOB, timeout=0)
        await service.stop(**{flag: True})
        assert service.status == final
        job = await service.get_job()
        assert job is not None and job.state == "CANCELLED"
        with pytest.raises(ValueError):
            await service.stop(timeout=True, failed=True)

    asyncio.run(scenario())


def test_blackfish_start_retried_after_a_failed_sbatch(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm
) -> None:
    async def scenario() -> None:
        service = Service(engine, worker, backend, id="svc-retry")
        fake.stop_controller()
        with pytest.raises(CommandFailed, match="Unable to contact slurm controller"):
            await service.start(BOX, JOB, timeout=0)
        assert service.status == "SUBMITTED"  # recorded, no job yet; nothing else changed
        fake.start_controller()
        await service.start(BOX, JOB, timeout=0)  # the same service, submitted now
        assert service.status == "PENDING" and fake.count("sbatch") == 1
        with pytest.raises(FsmError, match="starts once"):
            await service.start(BOX, JOB, timeout=0)

    asyncio.run(scenario())


@pytest.mark.parametrize("ending", ["HEALTHY", "FAILED"])
def test_blackfish_start_waits_until_healthy_or_final(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, ending: str
) -> None:
    """Seed 004: start "waits for the service to start" (bounded by `timeout`)."""

    def cluster_runs_it(port: int) -> None:
        deadline = time.monotonic() + 10
        while not fake.jobs and time.monotonic() < deadline:
            time.sleep(0.01)
        job = next(iter(fake.jobs))
        time.sleep(0.2)
        if ending == "HEALTHY":
            fake.set_state(job, "RUNNING", port=port)
        else:
            fake.set_state(job, "FAILED", exit_code="1:0")

    async def scenario(port: int) -> str:
        service = Service(engine, worker, backend)
        runner = threading.Thread(target=cluster_runs_it, args=(port,))
        runner.start()
        try:
            return await service.start(BOX, JOB, timeout=20, every=0.05)
        finally:
            runner.join()

    with http_server() as port:
        assert asyncio.run(scenario(port)) == ending
