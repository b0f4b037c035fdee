"""The worker-wide deadline rule (README "Running lifecycles"; `fsm.deadline_rule`).

Each case the hardening issue found is its own test (each fails on the worker before the rule),
and a property test drives the worker on the simulator with observations failing at random.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.base import Backend
from backends.sim import SimBackend, populate
from fsm import Engine, ManualClock, NewEntity
from fsm.observation import FailureKind, Observation
from fsm.testing import LookRecorder, deadline_violations
from fsm.worker import Worker, WorkerSettings
from storage import EntityRow, queue


class Truth(Backend):
    """Says what each entity's system shows (`events[id]`), or fails every look while down."""

    name = "truth"
    lifecycles = frozenset({"service", "operation"})

    def __init__(self) -> None:
        self.events: dict[str, tuple[str, ...]] = {}
        self.down = False
        self.looks: list[datetime] = []

    def observe(self, entities: Sequence[EntityRow], now: datetime) -> list[Observation]:
        self.looks.append(now)
        if self.down:
            return [Observation.failed(e.id, FailureKind.TIMEOUT, "down") for e in entities]
        return [Observation(e.id, self.events.get(e.id, ()), observed_at=now) for e in entities]


@pytest.fixture
def engine(db_url: str, clock: ManualClock) -> Engine:
    eng = Engine(db_url, clock=clock)
    yield eng  # type: ignore[misc]
    eng.close()


def _run(worker: Worker, clock: ManualClock, seconds: float, step: float) -> None:
    for _ in range(int(seconds / step)):
        worker.tick()
        clock.advance(step)


def _time_limits(engine: Engine, entity_id: str) -> list[str]:
    return [t.to_state for t in engine.history(entity_id) if t.source == "timer"]


def test_a_dead_workers_live_lease_does_not_skip_the_refresh(
    engine: Engine, clock: ManualClock
) -> None:
    """(a) A worker died holding the lease just before the deadline: the limit waits for the
    look the lease promised (after it expires), which shows the operation succeeded."""
    truth = Truth()
    op = engine.create("operation", {"time_limits": {"PENDING": 5}}).id
    clock.advance(4.9)
    with engine.store.transaction() as uow:  # the dead worker's claim, never finished
        [claim] = queue.claim_due(uow, "dead", clock(), clock() + timedelta(seconds=30), 10)
    truth.events[op] = ("succeed",)
    worker = Worker(engine, [truth])
    clock.advance(0.6)
    worker.tick()
    assert engine.get(op).state == "PENDING"  # before: TIMED_OUT, with no look at all
    _run(worker, clock, 40, 1.0)  # the lease expires at 34.9 s
    assert engine.get(op).state == "SUCCEEDED"
    assert _time_limits(engine, op) == []
    assert claim.entity.id == op


def test_a_service_in_backoff_gets_a_look_before_its_limit(
    engine: Engine, clock: ManualClock
) -> None:
    """(b) Looks fail from STARTING on; the job fails before the deadline; backoff would put
    the next look after it. The worker looks at the deadline and after it, and the service
    ends FAILED (its truth), not TIMEOUT."""
    truth = Truth()
    sid = engine.create("service").id
    truth.events[sid] = ("job_running", "ping_failed")
    worker = Worker(engine, [truth])
    worker.tick()
    assert engine.get(sid).state == "STARTING"
    deadline = engine.get(sid).deadline_at
    assert deadline is not None
    truth.down = True
    _run(worker, clock, 590, 2.5)
    truth.events[sid] = ("job_failed",)
    _run(worker, clock, 40, 2.5)  # past the deadline, still down
    assert engine.get(sid).state == "STARTING"
    assert [t for t in truth.looks if deadline <= t <= deadline + timedelta(seconds=30)]
    truth.down = False
    _run(worker, clock, 60, 2.5)
    assert engine.get(sid).state == "FAILED"
    assert _time_limits(engine, sid) == []


def test_an_operation_whose_truth_succeeded_ends_succeeded(
    engine: Engine, clock: ManualClock
) -> None:
    """(b) An operation succeeded just before its deadline while looks failed; the first look
    that succeeds within the bound records SUCCEEDED, not TIMED_OUT."""
    truth = Truth()
    op = engine.create("operation", {"time_limits": {"PENDING": 60}}).id
    worker = Worker(engine, [truth])
    truth.down = True
    _run(worker, clock, 59, 1.0)
    truth.events[op] = ("succeed",)
    _run(worker, clock, 30, 1.0)
    assert engine.get(op).state == "PENDING"
    truth.down = False
    _run(worker, clock, 10, 1.0)
    assert engine.get(op).state == "SUCCEEDED"


def test_after_the_bound_one_more_look_then_the_limit_fires(
    engine: Engine, clock: ManualClock
) -> None:
    """While every look fails the limit waits at most the bound (the limit again), and fires
    right after a look tried at or after it."""
    truth = Truth()
    truth.down = True
    op = engine.create("operation", {"time_limits": {"PENDING": 20}}).id
    created = clock()
    worker = Worker(engine, [truth])
    _run(worker, clock, 39, 0.5)
    assert engine.get(op).state == "PENDING"
    _run(worker, clock, 10, 0.5)
    [fired] = [t for t in engine.history(op) if t.source == "timer"]
    assert fired.to_state == "TIMED_OUT"
    assert fired.observed_at >= created + timedelta(seconds=40)
    assert fired.observed_at in truth.looks  # fired in the refresh that tried the last look
    assert engine.verify() == []


def test_unrouted_entities_time_out_on_the_clock(engine: Engine, clock: ManualClock) -> None:
    op = engine.create("operation", {"time_limits": {"PENDING": 5}}).id
    worker = Worker(engine, [])
    clock.advance(4.9)
    assert worker.fire_timeouts() == 0
    clock.advance(0.2)
    assert worker.fire_timeouts() == 1
    assert engine.get(op).state == "TIMED_OUT"


def test_a_worker_without_the_backend_waits_the_bound_for_an_observed_entity(
    engine: Engine, clock: ManualClock
) -> None:
    """On a shared database, a worker that does not drive an entity another worker's backend
    observes does not time it out on the clock alone: it waits the bound, as the driver would."""
    truth = Truth()
    op = engine.create("operation", {"time_limits": {"PENDING": 5}}).id
    Worker(engine, [truth]).tick()  # the driving worker looked once (then went away)
    assert engine.get(op).last_observed_at is not None
    other = Worker(engine, [])  # drives nothing
    clock.advance(5.5)
    assert other.fire_timeouts() == 0 and engine.get(op).state == "PENDING"
    clock.advance(5.0)  # deadline + bound (the limit again) passed
    assert other.fire_timeouts() == 1
    assert engine.get(op).state == "TIMED_OUT"
    assert engine.verify() == []


def test_the_next_look_is_never_after_the_deadline(engine: Engine, clock: ManualClock) -> None:
    truth = Truth()
    truth.down = True
    op = engine.create("operation", {"time_limits": {"PENDING": 50}}).id
    deadline = engine.get(op).deadline_at
    assert deadline is not None
    worker = Worker(engine, [truth])
    for _ in range(12):
        clock.now = max(clock.now, engine.get(op).next_refresh_at or clock.now)
        worker.tick()
        row = engine.get(op)
        assert row.next_refresh_at is not None
        if clock.now < deadline:
            assert row.next_refresh_at <= deadline
    assert deadline in truth.looks


def test_last_observed_at_records_the_last_successful_look(
    engine: Engine, clock: ManualClock
) -> None:
    truth = Truth()
    op = engine.create("operation").id
    worker = Worker(engine, [truth])
    worker.tick()
    seen = clock()
    assert engine.get(op).last_observed_at == seen
    truth.down = True
    clock.advance(10)
    worker.tick()
    assert engine.get(op).last_observed_at == seen
    assert engine.get(op).observation_failures == 1


@pytest.mark.parametrize("path", ["fire", "apply", "command"])
def test_the_time_limit_event_is_guarded_on_every_path(
    engine: Engine, clock: ManualClock, path: str
) -> None:
    """(c) `time_limit` 0 s after entering STARTING (limit 600 s) changes nothing, whoever
    sends it; after the limit it times the service out."""
    sid = engine.create("service").id
    engine.fire(sid, "job_running")
    worker = Worker(engine, [])

    def send() -> None:
        if path == "fire":
            engine.fire(sid, "time_limit")
        elif path == "apply":
            from fsm import Event

            [outcome] = engine.apply([Event(sid, "time_limit")]).outcomes
            assert outcome.error is None
        else:
            worker.command(sid, "time_limit")

    send()
    assert engine.get(sid).state == "STARTING"
    clock.advance(599.9)
    send()
    assert engine.get(sid).state == "STARTING"
    clock.advance(0.1)
    send()
    assert engine.get(sid).state == "TIMEOUT"


# -- the rule as a property --------------------------------------------------------------------

_prefixes = itertools.count()


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    fault_rate=st.floats(0.0, 0.9),
    batch_fault_rate=st.floats(0.0, 0.3),
    step=st.sampled_from([0.1, 0.25, 0.5, 1.0]),
)
def test_no_time_limit_fires_against_the_rule_whatever_fails(
    tmp_path: Path, seed: int, fault_rate: float, batch_fault_rate: float, step: float
) -> None:
    """With observations (and whole calls) failing at random, no time limit fires before its
    deadline, nor before a look after the deadline succeeded or the bound passed with one
    more look tried; and every entity still ends."""
    clock = ManualClock()
    prefix = f"p{next(_prefixes)}"
    engine = Engine(f"sqlite:///{tmp_path}/{prefix}.db", clock=clock, refresh_scale=0.2)
    try:
        sim = SimBackend(seed, fault_rate=fault_rate, batch_fault_rate=batch_fault_rate)
        ids = populate(engine, sim, services=12, prefix=prefix)
        limits = {"time_limits": {"PENDING": 1.0, "RUNNING": 0.5}}  # limits they can miss
        ops = [NewEntity("operation", limits, f"{prefix}-op-{i}") for i in range(4)]
        ids += [e.id for e in engine.create_many(ops)]
        recorder = LookRecorder(sim)
        worker = Worker(engine, [recorder], settings=WorkerSettings(max_backoff=4.0))
        for _ in range(int(300 / step)):
            worker.tick()
            if worker.open_work() == 0:
                break
            clock.advance(step)
        assert worker.open_work() == 0
        assert deadline_violations(engine, recorder.looks, ids) == []
        assert engine.verify() == []
    finally:
        engine.close()


def test_entities_waiting_for_a_look_do_not_crowd_out_other_deadlines(
    engine: Engine, clock: ManualClock
) -> None:
    from fsm import Event, NewEntity

    class Services(Truth):
        lifecycles = frozenset({"service"})

    ids = [e.id for e in engine.create_many([NewEntity("service") for _ in range(60)])]
    engine.apply([Event(i, "job_running") for i in ids])
    op = engine.create("operation", {"time_limits": {"PENDING": 650}}).id  # no backend: clock
    clock.advance(700)  # every service is past its deadline and due for a look
    worker = Worker(engine, [Services()])
    assert worker.fire_timeouts(limit=50) == 1
    assert engine.get(op).state == "TIMED_OUT"
    assert all(engine.get(i).state == "STARTING" for i in ids)


def test_a_backend_dating_its_look_in_the_future_cannot_time_out_early(
    engine: Engine, clock: ManualClock
) -> None:
    class Ahead(Truth):
        def observe(self, entities: Sequence[EntityRow], now: datetime) -> list[Observation]:
            later = now + timedelta(days=1)
            return [Observation(e.id, ("ping_failed",), observed_at=later) for e in entities]

    sid = engine.create("service").id
    engine.fire(sid, "job_running")
    worker = Worker(engine, [Ahead()])
    for _ in range(3):
        worker.tick()
        clock.advance(5)
    assert engine.get(sid).state == "STARTING"


@pytest.mark.parametrize("retry_after", [20.0, math.nan, math.inf, -3.0, "soon"])
def test_retry_after_is_honoured_when_sane_and_garbage_is_ignored(
    engine: Engine, clock: ManualClock, retry_after: object
) -> None:
    class Throttled(Truth):
        def observe(self, entities: Sequence[EntityRow], now: datetime) -> list[Observation]:
            return [
                Observation.failed(e.id, FailureKind.THROTTLED, "429", retry_after=retry_after)  # type: ignore[arg-type]
                for e in entities
            ]

    op = engine.create("operation", {"time_limits": {"PENDING": 5}}).id
    clock.advance(6)  # past the deadline: the rule's cadence would look again within 0.5 s
    Worker(engine, [Throttled()]).tick()
    row = engine.get(op)
    assert row.next_refresh_at is not None and row.observation_failures == 1
    gap = (row.next_refresh_at - clock()).total_seconds()
    assert gap >= 20.0 if retry_after == 20.0 else gap <= 0.5


def test_an_observation_time_from_the_future_cannot_time_out_early(
    engine: Engine, clock: ManualClock
) -> None:
    """`fire(..., observed_at=<next year>)` is dated when it is recorded: neither the
    time-limit event nor a failed ping can pass `time_limit_exceeded` before the limit."""
    sid = engine.create("service").id
    engine.fire(sid, "job_running")
    future = clock() + timedelta(days=365)
    for event in ("time_limit", "ping_failed"):
        outcome = engine.fire(sid, event, observed_at=future)
        assert outcome.state == "STARTING"
    assert [t.observed_at for t in engine.history(sid)] == [clock()]
