"""Shared pieces of the benchmarks: event plans, the anchors, databases, memory and statistics.

Everything here is setup or an anchor; the engine itself is only ever driven through its public
API (`Engine.fire`, `Engine.apply`, `Engine.create_many`, and for the in-memory decision
`Engine.stage(...).add`, what `Engine.apply` runs once per event).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import Any, TypeVar

from rawfsm import raw_machine

from backends.sim import SimBackend, populate
from fsm import Engine, Event, ManualClock, NewEntity, Store
from fsm.definition import Definition

T = TypeVar("T")

SERVICE = "service"

# Event plans on the built-in `service` lifecycle.
ENTRY = "job_pending"  # SUBMITTED -> PENDING
# From PENDING back to PENDING; every event changes the state.
CHANGING_CYCLE = ("job_running", "ping_ok", "ping_failed", "ping_ok", "job_pending")
# The same loop plus a guarded event: `ping_failed` in STARTING evaluates `time_limit_exceeded`
# (false), then takes the `=` candidate and stays (no transition record).
GUARDED_CYCLE = ("job_running", "ping_failed", "ping_ok", "ping_failed", "ping_ok", "job_pending")
# Events that each move a fresh (SUBMITTED) entity: two live states, two terminal ones.
FROM_SUBMITTED = ("job_pending", "job_running", "job_failed", "stop")


def memory_plan(count: int) -> list[str]:
    """One entity's event sequence for the in-memory benchmark: ENTRY, then the guarded loop."""
    return [ENTRY] + [GUARDED_CYCLE[i % len(GUARDED_CYCLE)] for i in range(count - 1)]


def life_event(step: int) -> str:
    """The `step`-th event (0-based) of an entity that changes state at every event."""
    return ENTRY if step == 0 else CHANGING_CYCLE[(step - 1) % len(CHANGING_CYCLE)]


def batch_event(index: int) -> str:
    """The one event the `index`-th fresh entity gets in the batch benchmarks."""
    return FROM_SUBMITTED[index % len(FROM_SUBMITTED)]


# -- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Paired:
    """Repetitions of a measurement and its anchor, taken alternately in the same run."""

    values: tuple[float, ...]
    anchors: tuple[float, ...]

    @property
    def ratios(self) -> list[float]:
        return [v / a for v, a in zip(self.values, self.anchors, strict=True)]

    @property
    def value(self) -> float:
        return statistics.median(self.values)

    @property
    def anchor(self) -> float:
        return statistics.median(self.anchors)

    @property
    def ratio(self) -> float:
        """Median of the per-repetition ratios (each repetition interleaves the two sides)."""
        return statistics.median(self.ratios)


Lane = Callable[[int], float]
"""Runs chunk `i` of one side of a comparison and returns the seconds it took (0.0: no work)."""


def alternate(chunks: int, lanes: Sequence[Lane]) -> list[float]:
    """Run chunk 0..chunks-1 of every lane, rotating which lane goes first; seconds per lane.

    Interleaving chunk by chunk (tenths of a second) makes a measurement and its anchor see the
    same load on a shared machine, which whole-run alternation (seconds apart) does not.
    """
    totals = [0.0] * len(lanes)
    order = list(range(len(lanes)))
    for chunk in range(chunks):
        shift = chunk % len(order)
        for lane in order[shift:] + order[:shift]:
            totals[lane] += lanes[lane](chunk)
    return totals


def sliced(items: Sequence[T], size: int, work: Callable[[Sequence[T]], object]) -> Lane:
    """A lane whose chunk `i` is `work(items[i*size:(i+1)*size])`, timed."""

    def lane(chunk: int) -> float:
        part = items[chunk * size : (chunk + 1) * size]
        if not part:
            return 0.0
        started = perf_counter()
        work(part)
        return perf_counter() - started

    return lane


def each(fn: Callable[[T], object]) -> Callable[[Sequence[T]], None]:
    """`fn` applied to every item of a chunk, in order."""

    def run(part: Sequence[T]) -> None:
        for item in part:
            fn(item)

    return run


def spread_slots(total: int, slots: int) -> list[int]:
    """Which of `total` chunks the `slots` chunks of a smaller lane run beside, evenly spaced."""
    return [int((j + 0.5) * total / slots) for j in range(slots)]


# -- memory ----------------------------------------------------------------------------------


def proc_status_bytes(field: str) -> int:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


# -- databases -------------------------------------------------------------------------------


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def build_template(path: Path, count: int, chunk: int = 5000) -> list[str]:
    """A database of `count` fresh service entities, made with `Engine.create_many` in chunks.

    Returns the ids in creation order. The engine is closed, so the WAL is checkpointed and the
    file can be copied as a fresh database for each repetition.
    """
    engine = Engine(sqlite_url(path))
    ids: list[str] = []
    try:
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            ids.extend(
                row.id for row in engine.create_many(NewEntity(SERVICE) for _ in range(size))
            )
    finally:
        engine.close()
    return ids


def copy_database(template: Path, target: Path) -> Path:
    """A byte copy of a closed SQLite database (and its WAL, if one was left)."""
    shutil.copyfile(template, target)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{template}{suffix}")
        if side.exists():
            shutil.copyfile(side, Path(f"{target}{suffix}"))
    return target


def count_transitions(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (total,) = conn.execute("SELECT count(*) FROM transition").fetchone()
    return int(total)


# -- simulated services for the refresh cycle ----------------------------------------------------

#: entities per claim in the refresh rows and their floors: main's old fixed default, kept so
#: figures stay comparable across versions (`fsm run` now sizes its batches itself)
CLAIM_BATCH = 100
SIM_SEED = 0
# Simulated durations stretched 100x: a service queues 50..300 s, so at SETUP_AT every one is
# still PENDING, and at CYCLE_AT about half of them have started running since (job_running,
# then ping_ok or ping_failed: PENDING -> STARTING or HEALTHY) while the others stay PENDING.
SIM_SCALE = 100.0
SETUP_AT = 40.0  # seconds after creation: the state recorded in the template
CYCLE_AT = 175.0  # seconds after creation: the refresh cycle measured
SIM_ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)


def sim_backend() -> SimBackend:
    return SimBackend(SIM_SEED, time_scale=SIM_SCALE)


def sim_clock(seconds: float) -> ManualClock:
    """A fixed clock `seconds` after the template's entities were created."""
    return ManualClock(SIM_ORIGIN + timedelta(seconds=seconds))


def build_sim_template(path: Path | str, count: int, chunk: int = 5000) -> list[str]:
    """`count` sim services created at SIM_ORIGIN, then recorded PENDING at SETUP_AT (what a
    refresh then observes for every one of them: job_pending), each due again 10 s later.

    Setup, untimed: `populate` then one `Engine.apply` of job_pending per chunk (as the worker
    would record it, source "sim"), rather than a whole refresh cycle, which costs more.
    """
    clock = sim_clock(0.0)
    engine = Engine(path if isinstance(path, str) else sqlite_url(path), clock=clock)
    try:
        ids = populate(engine, sim_backend(), services=count, chunk=chunk)
        clock.advance(SETUP_AT)
        now = clock()
        for start in range(0, count, chunk):
            events = [Event(i, "job_pending", None, "sim", now) for i in ids[start : start + chunk]]
            result = engine.apply(events)
            if any(o.error is not None or o.state != "PENDING" for o in result.outcomes):
                raise RuntimeError("the sim template did not record PENDING for every service")
    finally:
        engine.close()
    return ids


@dataclass(frozen=True, slots=True)
class SimPlan:
    """What one refresh cycle at CYCLE_AT observes: per entity (in id order) the recorded state
    and the events the sim reports; and what applying them does."""

    steps: tuple[tuple[str, tuple[str, ...]], ...]
    events: int  # events in all
    transitions: int  # state changes they make
    moved: int  # entities that change state at least once
    ids: tuple[str, ...] = ()  # the entity of each step
    data: tuple[dict[str, Any], ...] = ()  # the data each observation reports


def sim_plan(path: Path, ids: Sequence[str], definition: Definition, chunk: int = 5000) -> SimPlan:
    """The observations of the cycle, computed from the template (setup, untimed): the sim is
    deterministic and keeps nothing per entity, so these are the events the cycle applies."""
    sim = sim_backend()
    now = sim_clock(CYCLE_AT)()
    store = Store(sqlite_url(path))
    steps: list[tuple[str, tuple[str, ...]]] = []
    order: list[str] = []
    reported: list[dict[str, Any]] = []
    try:
        for start in range(0, len(ids), chunk):
            with store.transaction() as uow:  # the rows as the worker reads them
                rows = uow.lock_entities(ids[start : start + chunk])
            seen = {o.entity_id: o for o in sim.observe(list(rows.values()), now)}
            for entity_id in sorted(rows):
                observation = seen[entity_id]
                if observation.failure is not None:
                    raise RuntimeError(f"the sim failed to observe {entity_id}")
                steps.append((rows[entity_id].state, observation.events))
                order.append(entity_id)
                reported.append(dict(observation.data or {}))
    finally:
        store.close()
    if len(steps) != len(ids):
        raise RuntimeError("the sim template lost entities")
    # What the events do, on the anchor's own machine; few distinct (state, events) pairs.
    _machine, model = raw_machine(definition)
    changes: dict[tuple[str, tuple[str, ...]], int] = {}
    for step in set(steps):
        state, events = step
        model.state = state
        count = 0
        for name in events:
            before = model.state
            model.trigger(name)
            count += model.state != before
        changes[step] = count
    transitions = sum(changes[step] for step in steps)
    moved = sum(1 for step in steps if changes[step])
    return SimPlan(
        tuple(steps),
        sum(len(e) for _, e in steps),
        transitions,
        moved,
        tuple(order),
        tuple(reported),
    )


def env_summary() -> Mapping[str, str]:
    """What the numbers depend on, printed with the table."""
    import platform

    import sqlalchemy
    import transitions

    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "transitions": transitions.__version__,
        "cpus": str(os.cpu_count()),
    }
