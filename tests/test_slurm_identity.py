"""A job is ours or it is not: recycled ids, strangers' jobs, forged entity data, requeued runs,
releases that confirm — against the recorded-output fake controller. The property: whatever
happens to the cluster and whatever the entity data says, no code path signals a job whose
tag is not ours."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backends.slurm import KeyFileError, ReleaseNotConfirmed, SlurmBackend, load_key, submit_service
from backends.slurm.fake import FakeSlurm
from fsm import Engine, ManualClock
from fsm.worker import Worker, WorkerSettings
from tests.slurm_support import http_server

JOB = {"job_name": "svc"}
BOX = {"command": ["python3", "-m", "http.server", "{port}"]}
KEY = b"0123456789abcdef0123456789abcdef"


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
    return FakeSlurm(accounting=True)


@pytest.fixture
def backend(fake: FakeSlurm) -> SlurmBackend:
    return SlurmBackend(fake, key=KEY, ping_host="127.0.0.1", health_path="/", lost_after=60)


@pytest.fixture
def worker(engine: Engine, backend: SlurmBackend) -> Worker:
    return Worker(engine, [backend], settings=WorkerSettings(max_backoff=5))


def step(worker: Worker, clock: ManualClock, seconds: float = 60) -> None:
    clock.advance(seconds)
    worker.tick()


def job_of(engine: Engine, entity_id: str) -> str:
    return str(engine.get(entity_id).data["job_id"])


def test_the_tag_needs_the_key(tmp_path: Path) -> None:
    one, two = SlurmBackend(FakeSlurm(), key=KEY), SlurmBackend(FakeSlurm(), key=KEY[::-1])
    assert one.tag("e1") == one.tag("e1") != one.tag("e2")
    assert one.tag("e1") != two.tag("e1")  # another key: another tag
    key_file = tmp_path / "keys" / "tag.key"
    key = load_key(key_file)
    assert load_key(key_file) == key and len(key) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    os.chmod(key_file, 0o644)
    with pytest.raises(KeyFileError, match="open to other users"):
        load_key(key_file)
    link = tmp_path / "keys" / "link.key"
    link.symlink_to(key_file)
    with pytest.raises(KeyFileError, match="symlink"):
        load_key(link)


def test_a_recycled_id_is_never_ours_and_never_cancelled(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    """Issue 9, case 1: our HEALTHY job ends and is purged while no worker runs; another
    user's job gets its id. The entity ends with our job's real final state (sacct), the
    stranger's job is never observed as ours, and `stop` signals nothing."""
    entity_id = submit_service(engine, worker, backend, JOB, BOX)
    job = job_of(engine, entity_id)
    with http_server() as port:
        fake.set_state(job, "RUNNING", port=port)
        step(worker, clock)
        assert engine.get(entity_id).state == "HEALTHY"
    fake.set_state(job, "COMPLETED", exit_code="0:0")
    stranger = fake.recycle(job, name="svc", state="RUNNING", node="node01", port=port)
    step(worker, clock)
    entity = engine.get(entity_id)
    assert entity.state == "FAILED"  # a service that exits by itself failed (sacct told us)
    last = engine.history(entity_id)[-1]
    assert last.payload["via"] == "sacct" and last.payload["exit_code"] == "0:0"
    assert stranger.state == "RUNNING" and fake.signalled == []
    backend.release(entity, clock())
    backend.execute(entity, "stop", {}, clock())
    assert stranger.state == "RUNNING" and fake.signalled == []


def test_a_stranger_with_our_tag_in_its_name_is_not_ours(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    """The tag is visible in squeue: another user can copy our job name, never our uid."""
    entity_id = submit_service(engine, worker, backend, JOB, BOX)
    job = job_of(engine, entity_id)
    ours = fake.jobs[job]
    ours.listed = False  # purged, and nothing in accounting either
    fake.history.remove(ours)
    copy = fake.recycle(job, name=ours.name, state="RUNNING")
    step(worker, clock, 30)
    assert engine.get(entity_id).state == "PENDING"  # not seen: not lost yet either
    step(worker, clock, 120)
    assert engine.get(entity_id).state == "FAILED"  # lost: ended, cause unknown
    backend.release(engine.get(entity_id), clock())
    assert copy.state == "RUNNING" and fake.signalled == []


def test_forged_entity_data_points_at_nothing(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    """An entity whose data names another entity's job (or any job) cannot cancel it."""
    victim = submit_service(engine, worker, backend, JOB, BOX)
    fake.set_state(job_of(engine, victim), "RUNNING")
    forged = engine.create("service", {"job_id": job_of(engine, victim)}).id
    worker.command(forged, "stop")
    assert engine.get(forged).state == "STOPPED"
    assert fake.jobs[job_of(engine, victim)].state == "RUNNING" and fake.signalled == []


def test_a_requeued_run_is_found_on_its_new_port(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    """Issue 9, case 2: the old run's port file is still there; the new run's port is its own
    file, and the service restarts through PENDING/STARTING to HEALTHY on the new port."""
    entity_id = submit_service(engine, worker, backend, JOB, BOX)
    job = job_of(engine, entity_id)
    with http_server() as old_port, http_server() as new_port:
        fake.set_state(job, "RUNNING", port=old_port)
        step(worker, clock)
        assert engine.get(entity_id).data["port"] == old_port
        fake.requeue(job)
        fake.jobs[job].ports = {0: old_port}  # the stale file of run 0
        fake.set_state(job, "RUNNING", node="node01", start="2026-01-01T00:05:00")
        step(worker, clock)  # run 1 has not written its file yet: STARTING, no port
        assert engine.get(entity_id).state == "STARTING"
        assert engine.get(entity_id).data["port"] is None
        fake.jobs[job].ports = {0: old_port, 1: new_port}
        step(worker, clock)
        entity = engine.get(entity_id)
        assert (entity.state, entity.data["port"], entity.data["run"]) == ("HEALTHY", new_port, 1)
    path = [t.to_state for t in engine.history(entity_id)]
    assert path[-4:] == ["HEALTHY", "PENDING", "STARTING", "HEALTHY"]
    fake.set_state(job, "CANCELLED")
    step(worker, clock)
    assert engine.get(entity_id).state == "STOPPED"  # released: the port files are removed
    tag = backend.tag(entity_id)
    files = {os.path.expanduser(f"~/.fsm/jobs/{job}.{n}.{tag}.port") for n in (0, 1)}
    assert files <= fake.removed


def test_release_confirms_or_raises(
    engine: Engine, worker: Worker, backend: SlurmBackend, fake: FakeSlurm, clock: ManualClock
) -> None:
    """Contract 1: `release` returns only once the job is gone; raises while it cannot tell."""
    entity_id = submit_service(engine, worker, backend, JOB, BOX)
    job = job_of(engine, entity_id)
    fake.set_state(job, "RUNNING")
    entity = engine.get(entity_id)
    fake.stop_controller()
    with pytest.raises(ReleaseNotConfirmed):
        backend.release(entity, clock())
    assert fake.jobs[job].state == "RUNNING"
    fake.start_controller()
    backend.release(entity, clock())
    assert fake.jobs[job].state == "CANCELLED" and fake.signalled == [fake.jobs[job]]
    backend.release(entity, clock())  # idempotent: gone is gone
    assert len(fake.signalled) == 1


_CLUSTER_EVENTS = st.lists(
    st.sampled_from(
        [
            "run",
            "requeue",
            "complete",
            "fail",
            "purge",
            "recycle_stranger",
            "recycle_copycat",
            "controller_down",
            "controller_up",
            "forge_data",
            "stop",
            "release",
            "tick",
        ]
    ),
    max_size=14,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=_CLUSTER_EVENTS)
# (event n acts on entity n % 2)
@example(events=["tick", "tick", "recycle_copycat", "tick", "stop"])
@example(events=["run", "tick", "recycle_stranger", "tick", "release"])
@example(events=["tick", "forge_data", "tick", "stop"])
def test_no_code_path_signals_a_job_that_is_not_ours(tmp_path: Path, events: list[str]) -> None:
    """Random cluster histories (runs, requeues, purges, recycled ids taken by strangers or by
    copycats of our job name, outages, forged entity data) interleaved with refreshes, stops
    and releases: every job scancel acted on was submitted by us for that entity."""
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
    fake = FakeSlurm(accounting=True, uid=0)  # as root (like the real test cluster): the
    # controller would let us cancel anyone's job, so only our own checks stand in the way
    backend = SlurmBackend(fake, key=KEY, ping_host="127.0.0.1", lost_after=60)
    engine = Engine(f"sqlite:///{tmp_path}/p-{os.urandom(4).hex()}.db", clock=clock)
    try:
        worker = Worker(engine, [backend], settings=WorkerSettings(max_backoff=5))
        ids = [submit_service(engine, worker, backend, JOB, BOX) for _ in range(2)]
        ours = {fake.jobs[job_of(engine, i)].job_id: (i, fake.jobs[job_of(engine, i)]) for i in ids}
        for n, event in enumerate(events):
            entity_id = ids[n % 2]
            entity = engine.get(entity_id)
            job = str(entity.data.get("job_id", ""))
            current = fake.jobs.get(job)
            if event == "run" and current is not None:
                fake.set_state(job, "RUNNING")
            elif event == "requeue" and current is not None:
                fake.requeue(job)
            elif event in ("complete", "fail") and current is not None:
                fake.set_state(job, "COMPLETED" if event == "complete" else "FAILED")
            elif event == "purge" and current is not None:
                fake.forget(job)
            elif event == "recycle_stranger" and current is not None:
                fake.recycle(job)
            elif event == "recycle_copycat" and current is not None:
                fake.recycle(job, name=current.name)
            elif event == "controller_down":
                fake.stop_controller()
            elif event == "controller_up":
                fake.start_controller()
            elif event == "forge_data" and not entity.terminal:
                other = job_of(engine, ids[(n + 1) % 2])
                engine.fire(entity_id, "job_pending", data={"job_id": other}, source="attacker")
            elif event in ("stop", "release"):
                try:
                    if event == "stop" and not entity.terminal:
                        worker.command(entity_id, "stop")
                    else:
                        backend.release(entity, clock())
                except Exception:  # outages: a stop or release may fail, never mis-signal
                    pass
            else:
                clock.advance(30)
                worker.tick()
        for signalled in fake.signalled:
            owner = ours.get(signalled.job_id)
            assert owner is not None and owner[1] is signalled, f"signalled {signalled}"
    finally:
        engine.close()
