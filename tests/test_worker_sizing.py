"""The worker's batch sizing (fsm/worker_sizing.py): the rule's properties, and what it changes
for a worker and the runner. Batch times come from a fake timer: nothing here is timed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.sim import SimBackend, populate
from fsm import Engine, ManualClock
from fsm.config import ConfigError, load_config
from fsm.errors import InvalidInput
from fsm.runner import Runner
from fsm.worker import TickStats, Worker, WorkerSettings
from fsm.worker_sizing import (
    LEASE_SHARE,
    MAX_BATCH,
    MIN_BATCH,
    PROBE_EVERY,
    STEP,
    TARGET_BATCH_SECONDS,
    BatchSizer,
    next_size,
    size_limit,
)
from storage import queue
from tests.sizing_support import FakeTimer

sizes = st.integers(1, 5_000)
leases = st.floats(0.1, 86_400.0)
caps = st.none() | st.integers(1, 100_000)
took = st.floats(0.0, 100.0)


@st.composite
def batches(draw: st.DrawFn) -> tuple[int, int, float]:
    current = draw(sizes)
    return current, draw(st.integers(0, current)), draw(took)


def rate_of(claimed: int, seconds: float) -> float | None:
    return claimed / seconds if claimed > 0 and seconds > 0 else None


@given(batches(), leases, caps)
def test_the_size_stays_within_its_bounds(
    batch: tuple[int, int, float], lease: float, cap: int | None
) -> None:
    current, claimed, seconds = batch
    size = next_size(current, claimed, seconds, lease_seconds=lease, cap=cap)
    limit = size_limit(rate_of(claimed, seconds), lease, cap)
    assert 1 <= size <= limit
    assert size <= (MAX_BATCH if cap is None else cap)
    if cap is None:
        assert size >= min(MIN_BATCH, limit)
    else:
        assert size == limit  # an explicit batch_size is the size, unless the lease says less


@given(batches(), leases, caps)
def test_a_batch_never_plans_more_than_a_quarter_of_the_lease(
    batch: tuple[int, int, float], lease: float, cap: int | None
) -> None:
    current, claimed, seconds = batch
    rate = rate_of(claimed, seconds)
    size = next_size(current, claimed, seconds, lease_seconds=lease, cap=cap)
    if rate is not None and size > 1:
        # as a product, and with one part in 10^12 to spare: size / rate rounds differently
        # (76 in 29.5 s with a 29.5 s lease plans 19, and 19 / (76 / 29.5) > 29.5 / 4 by 1 ulp)
        assert size <= rate * lease * LEASE_SHARE * (1 + 1e-12)


@given(st.integers(MIN_BATCH, MAX_BATCH - 1), st.floats(1e-6, 1.0))
def test_fast_full_batches_grow(current: int, share: float) -> None:
    """A full batch (more is due) that took less than the target grows, by at most STEP."""
    seconds = TARGET_BATCH_SECONDS * share * 0.99
    size = next_size(current, current, seconds, lease_seconds=30.0, cap=None)
    assert current < size <= current * STEP


@given(batches(), leases)
def test_slow_batches_shrink_and_partial_ones_never_grow(
    batch: tuple[int, int, float], lease: float
) -> None:
    current, claimed, seconds = batch
    rate = rate_of(claimed, seconds)
    size = next_size(current, claimed, seconds, lease_seconds=lease, cap=None)
    floor = min(MIN_BATCH, size_limit(rate, lease, None))
    if rate is not None and rate * TARGET_BATCH_SECONDS < current:  # slower than the target
        assert size <= max(current, floor)
        assert size >= min(current / STEP, floor) - 1
    if claimed < current:  # no backlog seen
        assert size <= max(current, floor)


def drive(sizer: BatchSizer, cost: Callable[[int], float], batches: int) -> list[int]:
    """The sizes of `batches` full batches (a backlog), each taking `cost(size)` seconds."""
    seen = []
    for _ in range(batches):
        seen.append(sizer.size)
        sizer.measured(sizer.size, cost(sizer.size))
    return seen


@given(
    st.lists(
        st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 10.0), st.floats(1e-6, 0.05)), max_size=60
    ),
    leases,
)
def test_a_learned_size_never_plans_more_than_a_quarter_of_the_lease(
    batches: list[tuple[float, float, float]], lease: float
) -> None:
    """Whatever the sizer learned before (flat or not, probing or not), the size after a batch
    is done in a quarter of the lease at that batch's measured rate."""
    sizer = BatchSizer(WorkerSettings(lease_seconds=lease))
    for share, fixed, per_entity in batches:
        claimed = max(1, round(sizer.size * share))  # full or not
        seconds = fixed + per_entity * claimed
        sizer.measured(claimed, seconds)
        assert 1 <= sizer.size <= MAX_BATCH
        if seconds > 0 and sizer.size > 1:
            assert sizer.size <= claimed / seconds * lease * LEASE_SHARE * (1 + 1e-12)


@given(st.floats(TARGET_BATCH_SECONDS * 1.01, 5.0), st.floats(0.0, 1e-5))
def test_a_look_that_costs_the_same_for_any_batch_grows_batches_to_the_most(
    fixed: float, per_entity: float
) -> None:
    """One listing per look (Azure's VM list): slower than the target, but no slower for 2,000
    than for 100, so batches double to MAX_BATCH instead of staying at 100 forever."""
    sizer = BatchSizer(WorkerSettings(lease_seconds=600.0))
    sizes = drive(sizer, lambda n: fixed + per_entity * n, 12)
    assert sizer.flat and sizes[-1] == MAX_BATCH
    assert sizes.index(MAX_BATCH) <= 6  # 100, 200, 400, 800, 1600, 2000


@given(st.floats(TARGET_BATCH_SECONDS * 1.01 / MIN_BATCH, 0.05), st.floats(0.0, 0.05))
def test_a_slow_look_that_costs_by_the_entity_stays_small_but_for_rare_probes(
    per_entity: float, fixed: float
) -> None:
    """A batch that costs in proportion to its size (plus a little per call) and is slower
    than the target keeps the smallest size; one batch in PROBE_EVERY tries twice as many
    and, finding it twice as slow, goes back."""
    sizer = BatchSizer(WorkerSettings(lease_seconds=600.0))
    count = 4 * PROBE_EVERY
    sizes = drive(sizer, lambda n: fixed + per_entity * n, count)
    assert not sizer.flat
    assert set(sizes) <= {MIN_BATCH, MIN_BATCH * STEP}
    assert sizes.count(MIN_BATCH * STEP) <= count // PROBE_EVERY + 1


@given(st.floats(1.5, 20.0))
def test_one_hiccup_of_a_small_batch_does_not_make_the_cost_flat(hiccup: float) -> None:
    """The first batch stalls (a checkpoint, a GC pause), so the probe after it looks flat by
    comparison; the next, bigger batch costs in proportion again and the rule comes back."""
    sizer = BatchSizer(WorkerSettings(lease_seconds=600.0))
    stalls = iter([hiccup])
    sizes = drive(sizer, lambda n: 0.01 * n * next(stalls, 1.0), 3 * PROBE_EVERY)
    assert not sizer.flat
    assert max(sizes) <= 4 * MIN_BATCH and sizes[-1] == MIN_BATCH


def test_a_flat_cost_that_turns_per_entity_brings_the_rule_back() -> None:
    sizer = BatchSizer(WorkerSettings(lease_seconds=600.0))
    drive(sizer, lambda n: 1.0, 10)
    assert sizer.flat and sizer.size == MAX_BATCH
    drive(sizer, lambda n: 0.01 * n, 3)  # the backend now costs 10 ms an entity: 20 s a batch
    assert not sizer.flat and sizer.size < MAX_BATCH


def test_an_explicit_batch_size_is_never_probed() -> None:
    sizer = BatchSizer(WorkerSettings(batch_size=100, lease_seconds=600.0))
    assert set(drive(sizer, lambda n: 1.0, 3 * PROBE_EVERY)) == {100}


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "100", float("nan")])
def test_optional_sizes_are_typed_when_given(bad: object) -> None:
    for name in ("batch_size", "max_batches_per_tick"):
        with pytest.raises(InvalidInput, match=name):
            WorkerSettings(**{name: bad})  # type: ignore[arg-type]
    assert WorkerSettings().batch_size is None and WorkerSettings().max_batches_per_tick is None


@pytest.fixture
def backlog(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[Engine, SimBackend]]:
    engine = Engine(f"sqlite:///{tmp_path / 'backlog.db'}", clock=clock)
    sim = SimBackend(seed=3, time_scale=1e6)  # every service stays PENDING, due again
    populate(engine, sim, services=12_000)  # all due now: more than the old 50 x 100 a tick
    yield engine, sim
    engine.close()


def ticks_to_drain(worker: Worker) -> tuple[int, int, list[TickStats]]:
    seen: list[TickStats] = []
    while (stats := worker.refresh()).claimed:
        seen.append(stats)
    return len(seen), sum(s.batches for s in seen), seen


def test_a_backlog_drains_in_fewer_ticks_than_with_the_old_fixed_sizes(
    backlog: tuple[Engine, SimBackend], clock: ManualClock
) -> None:
    engine, sim = backlog
    old = Worker(engine, [sim], settings=WorkerSettings(batch_size=100, max_batches_per_tick=50))
    old_ticks, old_batches, old_seen = ticks_to_drain(old)
    assert sum(s.claimed for s in old_seen) == 12_000
    assert old_ticks == 3 and old_seen[0].behind and not old_seen[-1].behind
    clock.advance(60)  # everything is due again
    new = Worker(engine, [sim])
    new.sizing = BatchSizer(new.settings, timer=FakeTimer(0.001))  # fast batches
    new_ticks, new_batches, new_seen = ticks_to_drain(new)
    assert sum(s.claimed for s in new_seen) == 12_000
    assert new_ticks < old_ticks and new_batches < old_batches
    assert new.sizing.size == MAX_BATCH


def test_a_tick_that_spent_its_budget_with_work_left_is_behind(
    backlog: tuple[Engine, SimBackend],
) -> None:
    engine, sim = backlog
    worker = Worker(engine, [sim])
    worker.sizing = BatchSizer(worker.settings, timer=FakeTimer(0.4))  # slow batches
    stats = worker.refresh()
    assert stats.behind and 0 < stats.batches < 5
    assert stats.claimed == stats.batches * MIN_BATCH  # slow: the size never rose above 100


def test_a_backend_that_lists_everything_in_one_call_drains_a_backlog_in_few_calls(
    backlog: tuple[Engine, SimBackend],
) -> None:
    """Each look takes 0.6 s whatever the batch holds (one listing, as Azure's): slower than
    the target, so sizing by time alone kept 100 a batch, 120 calls for 12,000 due."""
    engine, sim = backlog
    worker = Worker(engine, [sim])
    worker.sizing = BatchSizer(worker.settings, timer=FakeTimer(0.6))
    before = sim.calls
    _ticks, batches, seen = ticks_to_drain(worker)
    assert sum(s.claimed for s in seen) == 12_000
    assert sim.calls - before == batches <= 12
    assert worker.sizing.flat and worker.sizing.size == MAX_BATCH


class ScriptedWorker:
    """Behind for its first `behind` ticks, then idle."""

    def __init__(self, behind: int) -> None:
        self.behind = behind
        self.ticks = 0
        self.id = "scripted"
        self.engine = SimpleNamespace(store=SimpleNamespace(url="sqlite://"))

    def tick(self) -> TickStats:
        self.ticks += 1
        return TickStats(claimed=1, behind=self.ticks <= self.behind)

    def open_work(self) -> int:
        return 0 if self.ticks > self.behind else 1

    def release(self) -> int:
        return 0


def run_in_thread(runner: Runner) -> threading.Thread:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return thread


def test_the_runner_ticks_again_at_once_while_the_worker_is_behind() -> None:
    worker = ScriptedWorker(behind=4)
    runner = Runner(worker, interval=3600.0, exit_when_idle=True)  # type: ignore[arg-type]
    thread = run_in_thread(runner)
    thread.join(60)  # a runner waiting out the interval between ticks would still be running
    alive = thread.is_alive()
    runner.stop()
    assert not alive and runner.exit_code == 0
    assert worker.ticks == runner.ticks == 5


def test_the_runner_waits_its_interval_when_the_worker_is_not_behind() -> None:
    worker = ScriptedWorker(behind=0)
    worker.open_work = lambda: 1  # type: ignore[method-assign]  # never idle
    runner = Runner(worker, interval=3600.0)  # type: ignore[arg-type]
    thread = run_in_thread(runner)
    for _ in range(600):
        if worker.ticks:
            break
        time.sleep(0.05)
    time.sleep(0.5)  # room for a wrong second tick
    runner.stop()
    thread.join(60)
    assert worker.ticks == 1 and not thread.is_alive()


# -- the refresh's re-read of its claims (queue.reread_claims) -----------------------------------


def test_the_re_read_reuses_unchanged_claims_and_reads_changed_ones_anew(
    db_url: str, clock: ManualClock
) -> None:
    engine = Engine(db_url, clock=clock)
    try:
        ids = [engine.create("service", id=f"svc-{i}").id for i in range(4)]
        now = clock()
        with engine.store.transaction() as uow:
            claims = queue.claim_due(uow, "me", now, now + timedelta(seconds=30), 10)
        assert sorted(c.entity.id for c in claims) == ids
        engine.fire(ids[1], "job_pending")  # changed since the claim: a new version
        with engine.store.transaction() as uow:  # another worker took this one over
            uow.connection.exec_driver_sql(
                "UPDATE entity SET lease_owner = 'other' WHERE id = 'svc-2'"
            )
        with engine.store.transaction() as uow:
            ours = queue.reread_claims(uow, "me", claims)
        by_id = {c.entity.id: c.entity for c in claims}
        assert list(ours) == [i for i in (c.entity.id for c in claims) if i != "svc-2"]
        assert ours["svc-1"].state == "PENDING" and ours["svc-1"].version > by_id["svc-1"].version
        assert ours["svc-0"] == by_id["svc-0"] and ours["svc-3"] == by_id["svc-3"]
        if db_url.startswith("sqlite"):
            assert ours["svc-0"] is by_id["svc-0"]  # SQLite: not converted again
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("text", "batch_size", "max_batches"),
    [
        ("interval: 1.0\n", None, None),
        ("batch_size: null\nmax_batches_per_tick: null\n", None, None),
        ("batch_size: 250\nmax_batches_per_tick: 7\n", 250, 7),
    ],
)
def test_run_config_leaves_the_sizes_to_the_worker_unless_given(
    tmp_path: Path, text: str, batch_size: int | None, max_batches: int | None
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    config = load_config(path)
    assert (config.batch_size, config.max_batches_per_tick) == (batch_size, max_batches)


@pytest.mark.parametrize("value", ["0", "2.5", "abc", "true", "100001"])
def test_run_config_refuses_a_bad_batch_size(tmp_path: Path, value: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"batch_size: {value}\n")
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(path)
