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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import Any, TypeVar

from transitions import Machine

from backends.sim import SimBackend, populate
from fsm import Engine, Event, ManualClock, NewEntity, Store
from fsm.definition import Definition
from fsm.engine import DEFAULT_REFRESH_SECONDS
from fsm.lifecycle import Lifecycle
from storage.database import _SQLITE_PRAGMAS
from storage.records import EntityRow, EntityUpdate, TransitionRow
from storage.store import UnitOfWork

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


def build_sim_template(path: Path, count: int, chunk: int = 5000) -> list[str]:
    """`count` sim services created at SIM_ORIGIN, then recorded PENDING at SETUP_AT (what a
    refresh then observes for every one of them: job_pending), each due again 10 s later.

    Setup, untimed: `populate` then one `Engine.apply` of job_pending per chunk (as the worker
    would record it, source "sim"), rather than a whole refresh cycle, which costs more.
    """
    clock = sim_clock(0.0)
    engine = Engine(sqlite_url(path), clock=clock)
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


def sim_plan(path: Path, ids: Sequence[str], definition: Definition, chunk: int = 5000) -> SimPlan:
    """The observations of the cycle, computed from the template (setup, untimed): the sim is
    deterministic and keeps nothing per entity, so these are the events the cycle applies."""
    sim = sim_backend()
    now = sim_clock(CYCLE_AT)()
    store = Store(sqlite_url(path))
    steps: list[tuple[str, tuple[str, ...]]] = []
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
    return SimPlan(tuple(steps), sum(len(e) for _, e in steps), transitions, moved)


def replay(model: RawModel, steps: Sequence[tuple[str, tuple[str, ...]]]) -> None:
    """The refresh anchor: put the one model in each entity's recorded state, trigger its
    observed events."""
    for state, events in steps:
        model.state = state
        for name in events:
            model.trigger(name)


# -- the rules, precomputed for the anchors and the naive ORM route ----------------------------


class Rules:
    """What a writer outside the engine needs to store the same rows the engine stores.

    The destination of each unguarded (state, event) is read once, at setup, off the compiled
    lifecycle, so the anchors spend no time deciding: they are the cost floor of the writes.
    """

    def __init__(self, lifecycle: Lifecycle, default_refresh: float = DEFAULT_REFRESH_SECONDS):
        self.version = lifecycle.version
        self.terminal = lifecycle.terminal
        self.dest: dict[tuple[str, str], str] = {}
        for state in lifecycle.states:
            for event in lifecycle.allowed[state]:
                found = lifecycle.candidates(state, event) or ()
                unguarded = [c for c in found if not c.checks]
                if unguarded:
                    self.dest[(state, event)] = unguarded[0].dest
        self.limit: dict[str, timedelta | None] = {}
        self.refresh: dict[str, timedelta | None] = {}
        for name, spec in lifecycle.states.items():
            self.limit[name] = (
                None if spec.time_limit is None else timedelta(seconds=spec.time_limit)
            )
            every = spec.refresh if spec.refresh is not None else default_refresh
            self.refresh[name] = None if name in self.terminal else timedelta(seconds=every)


def iso(value: datetime | None) -> str | None:
    """The fixed-width text the project keeps in SQLite (`storage.types.sqlite_time`)."""
    return None if value is None else value.isoformat(timespec="microseconds")


class RawSqliteWriter:
    """The persist_single anchor: stdlib sqlite3, the project's pragmas and schema.

    Per event: BEGIN IMMEDIATE, a versioned UPDATE of the entity head (same columns and values
    as the engine), an INSERT of the transition row, COMMIT. No read: the heads are tracked in
    Python, so this is the floor of "insert + versioned update per commit".
    """

    UPDATE = (
        "UPDATE entity SET state = ?, terminal = ?, version = ?, seq = ?, state_entered_at = ?, "
        "deadline_at = ?, next_refresh_at = ?, updated_at = ?, definition_version = ? "
        "WHERE id = ? AND version = ?"
    )
    INSERT = (
        "INSERT INTO transition (entity_id, seq, from_state, to_state, event, source, payload, "
        "observed_at, recorded_at, definition_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    def __init__(self, path: Path, rules: Rules, ids: Sequence[str]) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in _SQLITE_PRAGMAS:
            self.conn.execute(pragma)
        self.rules = rules
        self.heads: dict[str, tuple[str, int, int]] = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            marks = ", ".join("?" * len(part))
            sql = f"SELECT id, state, version, seq FROM entity WHERE id IN ({marks})"
            for entity_id, state, version, seq in self.conn.execute(sql, part):
                self.heads[entity_id] = (state, version, seq)

    def step(self, entity_id: str, event: str) -> None:
        rules = self.rules
        state, version, seq = self.heads[entity_id]
        dest = rules.dest[(state, event)]
        now = datetime.now(UTC)
        stamp = iso(now)
        limit = rules.limit[dest]
        refresh = rules.refresh[dest]
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        matched = conn.execute(
            self.UPDATE,
            (
                dest,
                dest in rules.terminal,
                version + 1,
                seq + 1,
                stamp,
                None if limit is None else iso(now + limit),
                None if refresh is None else iso(now + refresh),
                stamp,
                rules.version,
                entity_id,
                version,
            ),
        ).rowcount
        if matched != 1:
            conn.rollback()
            raise RuntimeError(f"version conflict on {entity_id}")
        conn.execute(
            self.INSERT,
            (entity_id, seq + 1, state, dest, event, "user", "{}", stamp, stamp, rules.version),
        )
        conn.commit()
        self.heads[entity_id] = (dest, version + 1, seq + 1)

    def close(self) -> None:
        self.conn.close()


# -- the raw `transitions` anchor ----------------------------------------------------------------


class RawModel:
    """The one model a plain `transitions.Machine` moves (what the engine avoids per entity)."""

    state: str
    trigger: Callable[..., bool]  # added by the machine

    def __init__(self) -> None:
        self.deadline_at: datetime | None = None
        self.observed_at = datetime.now(UTC)

    def time_limit_exceeded(self) -> bool:
        return self.deadline_at is not None and self.observed_at >= self.deadline_at


def raw_machine(definition: Definition) -> tuple[Machine, RawModel]:
    """A plain Machine with the same states and transitions, `model=` one object."""
    model = RawModel()
    machine = Machine(
        model=model,
        states=list(definition.state_names),
        initial=definition.initial,
        auto_transitions=False,
    )
    for t in definition.transitions:
        for guard in (*t.guards, *t.unless):
            if not callable(getattr(model, guard, None)):
                raise RuntimeError(f"the raw anchor has no guard {guard!r}")
        machine.add_transition(
            t.trigger, list(t.sources), t.dest, conditions=list(t.guards), unless=list(t.unless)
        )
    return machine, model


# -- a store without a database, for the engine's in-memory path -----------------------------------


class _MemoryUnitOfWork(UnitOfWork):
    def __init__(self, rows: dict[str, EntityRow]) -> None:  # no connection: nothing to run
        self._rows = rows

    def ensure_definition(
        self, name: str, version: str, body: dict[str, Any], now: datetime
    ) -> None:
        return None

    def lock_entities(self, ids: Any) -> dict[str, EntityRow]:
        rows = self._rows
        return {i: rows[i] for i in dict.fromkeys(ids) if i in rows}

    def write(self, updates: Sequence[EntityUpdate], transitions: Sequence[TransitionRow]) -> None:
        rows = self._rows
        for u in updates:
            rows[u.id] = rows[u.id]._replace(
                state=u.state,
                terminal=u.terminal,
                version=u.version,
                seq=u.seq,
                state_entered_at=u.state_entered_at,
                deadline_at=u.deadline_at,
                next_refresh_at=u.next_refresh_at,
                updated_at=u.updated_at,
                definition_version=u.definition_version,
                data=u.data if u.data is not None else rows[u.id].data,
            )


class MemoryStore(Store):
    """A `Store` that keeps entity heads in a dict and drops transitions: no database at all."""

    def __init__(self) -> None:  # deliberately no engine
        self.url = "memory://"
        self.dialect = "memory"
        self.rows: dict[str, EntityRow] = {}

    def close(self) -> None:
        return None

    def ensure_definition(
        self, name: str, version: str, body: dict[str, Any], now: datetime
    ) -> None:
        return None

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        yield _MemoryUnitOfWork(self.rows)


def fresh_row(entity_id: str, lifecycle: Lifecycle, now: datetime) -> EntityRow:
    """An entity as `Engine.create_many` makes it (no data, no deadline in the initial state)."""
    return EntityRow(
        id=entity_id,
        lifecycle=lifecycle.name,
        definition_version=lifecycle.version,
        state=lifecycle.initial,
        terminal=lifecycle.is_terminal(lifecycle.initial),
        version=1,
        seq=0,
        state_entered_at=now,
        deadline_at=None,
        next_refresh_at=now,
        created_at=now,
        updated_at=now,
        data={},
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
