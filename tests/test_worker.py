"""The worker in-process, on a manual clock: refresh, backoff, deadlines, commands, faults."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from backends.sim import SimBackend, populate
from fsm import Engine, ManualClock, NewEntity
from fsm.observation import FailureKind, Observation
from fsm.worker import Worker, WorkerSettings
from storage import queue
from tests.sizing_support import seeded_worker


def drive(worker: Worker, clock: ManualClock, *, step: float = 0.1, limit: int = 3000) -> int:
    for n in range(limit):
        worker.tick()
        if worker.open_work() == 0:
            return n
        clock.advance(step)
    raise AssertionError(f"still {worker.open_work()} open after {limit} ticks")


@pytest.fixture
def fast_engine(db_url: str, clock: ManualClock) -> Engine:
    eng = Engine(db_url, clock=clock, refresh_scale=0.05)
    yield eng  # type: ignore[misc]
    eng.close()


def test_every_simulated_entity_ends_in_its_ground_truth(
    fast_engine: Engine, clock: ManualClock
) -> None:
    sim = SimBackend(seed=11)
    populate(fast_engine, sim, services=200, hosts=5, stop_every=17)
    worker = Worker(fast_engine, [sim], settings=WorkerSettings(batch_size=64))
    drive(worker, clock)
    entities = fast_engine.list_entities()
    wrong = [
        (e.id, e.state, sim.expected_final_state(e))
        for e in entities
        if e.state != sim.expected_final_state(e)
    ]
    assert wrong == []
    assert {"FAILED", "TIMEOUT", "STOPPED", "DEPROVISIONED"} <= {e.state for e in entities}
    assert fast_engine.verify() == []


def test_one_backend_call_per_batch(fast_engine: Engine, clock: ManualClock) -> None:
    sim = SimBackend(seed=1)
    populate(fast_engine, sim, services=1000)
    # an explicit batch count: the tick is not cut by its time budget on a slow machine
    settings = WorkerSettings(batch_size=100, max_batches_per_tick=50)
    worker = Worker(fast_engine, [sim], settings=settings)
    stats = worker.refresh()
    assert stats.claimed == 1000
    assert stats.backend_calls == stats.batches == sim.calls == 10


class Flaky(SimBackend):
    """Fails every observation while `down` is set."""

    down = False

    def observe(self, entities, now):  # type: ignore[no-untyped-def]
        if self.down:
            return [
                Observation.failed(e.id, FailureKind.TIMEOUT, "ssh timed out") for e in entities
            ]
        return super().observe(entities, now)


def test_failed_observations_change_no_state_and_back_off(
    fast_engine: Engine, clock: ManualClock
) -> None:
    sim = Flaky(seed=2, fates=("healthy",))
    [sid] = populate(fast_engine, sim, services=1)
    worker = Worker(fast_engine, [sim])
    while fast_engine.get(sid).state != "HEALTHY":
        worker.tick()
        clock.advance(0.1)
    before = fast_engine.get(sid)
    sim.down = True
    gaps = []
    for _ in range(6):
        clock.now = fast_engine.get(sid).next_refresh_at or clock.now
        worker.refresh()
        row = fast_engine.get(sid)
        assert (row.state, row.version, row.seq) == (before.state, before.version, before.seq)
        assert row.next_refresh_at is not None
        gaps.append((row.next_refresh_at - clock.now).total_seconds())
    assert fast_engine.get(sid).observation_failures == 6
    base = fast_engine.refresh_interval("service", "HEALTHY")
    assert all(0.5 * base * 2**i <= g <= base * 2**i + 1e-6 for i, g in enumerate(gaps))
    sim.down = False
    clock.now = fast_engine.get(sid).next_refresh_at or clock.now
    worker.refresh()
    assert fast_engine.get(sid).observation_failures == 0


def test_backoff_is_capped(fast_engine: Engine, clock: ManualClock) -> None:
    sim = Flaky(seed=2)
    sim.down = True
    [sid] = populate(fast_engine, sim, services=1)
    worker = Worker(fast_engine, [sim], settings=WorkerSettings(max_backoff=2.0))
    for _ in range(12):
        clock.now = fast_engine.get(sid).next_refresh_at or clock.now
        worker.refresh()
    row = fast_engine.get(sid)
    assert row.next_refresh_at is not None
    assert (row.next_refresh_at - clock.now) <= timedelta(seconds=2.0)
    assert row.state == "SUBMITTED"


def test_thirty_percent_faults_cause_no_false_terminal_transition(
    fast_engine: Engine, clock: ManualClock
) -> None:
    sim = SimBackend(seed=5, fault_rate=0.3)
    truth = SimBackend(seed=5)
    populate(fast_engine, sim, services=150)
    worker = seeded_worker(fast_engine, [sim], 5)  # one schedule on any machine
    failures: Counter[str] = Counter()
    for _ in range(4000):
        stats = worker.tick()
        failures.update(stats.failures)
        if worker.open_work() == 0:
            break
        clock.advance(0.1)
    assert worker.open_work() == 0  # everything still finishes
    assert sum(failures.values()) > 100 and len(failures) >= 3
    for entity in fast_engine.list_entities():
        plan = truth.service_plan(entity.id)
        for t in fast_engine.history(entity.id):
            if t.from_state in ("HEALTHY", "UNHEALTHY") and t.to_state in ("FAILED", "TIMEOUT"):
                at = (t.observed_at - entity.created_at).total_seconds()
                assert plan.job_state(at) in ("FAILED", "TIMEOUT"), (entity.id, t)
            if t.to_state == "FAILED":
                assert plan.fate == "fails" and t.event == "job_failed"
    assert fast_engine.verify() == []


def test_deadline_fires_the_time_limit_event(fast_engine: Engine, clock: ManualClock) -> None:
    op = fast_engine.create("operation", {"time_limits": {"PENDING": 5}})
    worker = Worker(fast_engine, [])
    clock.advance(4.9)
    assert worker.fire_timeouts() == 0
    clock.advance(0.2)
    assert worker.fire_timeouts() == 1
    [t] = fast_engine.history(op.id)
    assert (t.to_state, t.event, t.source) == ("TIMED_OUT", "time_limit", "timer")


def test_scheduled_command_runs_once_even_if_two_workers_race(
    fast_engine: Engine, clock: ManualClock
) -> None:
    sim = SimBackend(seed=3, fates=("healthy",))
    [sid] = populate(fast_engine, sim, services=1)
    first, second = Worker(fast_engine, [sim]), Worker(fast_engine, [sim])
    first.schedule(sid, "stop", delay=1)
    clock.advance(1)
    assert first.run_commands() + second.run_commands() == 1
    clock.advance(120)  # the claim would long have expired: still done once
    assert first.run_commands() + second.run_commands() == 0
    stops = [t for t in fast_engine.history(sid) if t.event == "stop"]
    assert len(stops) == 1 and stops[0].source == "schedule"
    with fast_engine.store.transaction() as uow:
        [cmd] = queue.list_commands(uow, sid)
    assert cmd.done_at is not None and "STOPPED" in (cmd.outcome or "")


def test_scheduled_command_on_a_finished_entity_is_recorded_as_refused(
    fast_engine: Engine, clock: ManualClock
) -> None:
    sid = fast_engine.create("service").id
    worker = Worker(fast_engine, [])
    worker.schedule(sid, "stop", delay=5)
    fast_engine.fire(sid, "job_failed")
    clock.advance(5)
    worker.run_commands()
    with fast_engine.store.transaction() as uow:
        [cmd] = queue.list_commands(uow, sid)
    assert cmd.done_at is not None and (cmd.outcome or "").startswith("refused")
    assert [t.event for t in fast_engine.history(sid)] == ["job_failed"]


def test_a_worker_whose_lease_expired_writes_nothing(
    fast_engine: Engine, clock: ManualClock
) -> None:
    sim = SimBackend(seed=4)
    populate(fast_engine, sim, services=3)
    other = Worker(fast_engine, [sim])

    class Slow(SimBackend):
        def observe(self, entities, now):  # type: ignore[no-untyped-def]
            clock.advance(2)  # our 1 s lease expires while we observe...
            assert other.refresh().takeovers == 3  # ...and another worker takes over
            return super().observe(entities, now)

    slow = Worker(fast_engine, [Slow(seed=4)], settings=WorkerSettings(lease_seconds=1))
    stats = slow.refresh_batch()
    assert stats is not None and stats.leases_lost == 3 and stats.transitions == 0
    for entity in fast_engine.list_entities():
        assert entity.lease_owner is None
        assert {t.source for t in fast_engine.history(entity.id)} <= {"sim"}
    assert fast_engine.verify() == []


def test_commands_the_lifecycle_does_not_know_or_allow_are_refused(fast_engine: Engine) -> None:
    sid = fast_engine.create("service").id
    worker = Worker(fast_engine, [])
    with pytest.raises(Exception, match="neither an event"):
        worker.schedule(sid, "explode")
    with pytest.raises(Exception, match="not allowed"):
        worker.command(sid, "ping_ok")
    assert fast_engine.get(sid).version == 1


def test_two_backends_for_one_lifecycle_are_refused(fast_engine: Engine) -> None:
    with pytest.raises(Exception, match="two backends"):
        Worker(fast_engine, [SimBackend(), SimBackend()])


def test_entities_created_later_are_picked_up(fast_engine: Engine, clock: ManualClock) -> None:
    sim = SimBackend(seed=9)
    worker = Worker(fast_engine, [sim])
    assert worker.refresh().claimed == 0
    fast_engine.create_many([NewEntity("service", sim.service_data("late"), "late")])
    assert worker.refresh().claimed == 1


class DataOnly(SimBackend):
    """Reports data without events (e.g. a tunnel's new port)."""

    def observe(self, entities, now):  # type: ignore[no-untyped-def]
        return [Observation(e.id, data={"tunnel_port": 4242}, observed_at=now) for e in entities]


def test_data_without_events_is_recorded_without_a_transition(
    fast_engine: Engine, clock: ManualClock
) -> None:
    sid = fast_engine.create("service").id
    Worker(fast_engine, [DataOnly()]).refresh()
    entity = fast_engine.get(sid)
    assert entity.data["tunnel_port"] == 4242
    assert (entity.version, entity.seq, entity.state) == (2, 0, "SUBMITTED")
    assert fast_engine.history(sid) == []


class SlowFailing(SimBackend):
    """Every call fails, and takes longer than the backoff it causes."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.clock = clock

    def observe(self, entities, now):  # type: ignore[no-untyped-def]
        self.calls += 1
        self.clock.advance(5)
        return [Observation.failed(e.id, FailureKind.TIMEOUT, "slow") for e in entities]


def test_a_tick_never_claims_what_fell_due_during_it(
    fast_engine: Engine, clock: ManualClock
) -> None:
    sim = SlowFailing(clock)
    populate(fast_engine, SimBackend(), services=30)
    worker = Worker(fast_engine, [sim], settings=WorkerSettings(batch_size=10, max_backoff=0.1))
    stats = worker.refresh()
    assert stats.claimed == 30 and sim.calls == 3  # each entity once, then the tick ends


def test_an_always_due_entity_still_times_out(fast_engine: Engine, clock: ManualClock) -> None:
    """The wait for a successful look is bounded: an entity whose every look fails is timed
    out once the bound (its limit again) passed, right after one more look was tried."""
    op = fast_engine.create("operation", {"time_limits": {"PENDING": 5}})
    sim = Flaky(seed=1)
    sim.down = True
    worker = Worker(fast_engine, [sim])  # routed, and due for refresh all along
    clock.advance(5.1)
    worker.tick()
    assert fast_engine.get(op.id).state == "PENDING"  # overdue, but no look succeeded yet
    for _ in range(60):
        clock.advance(0.1)
        worker.tick()
    assert fast_engine.get(op.id).state == "TIMED_OUT"
