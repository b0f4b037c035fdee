"""Engine benchmarks, each measured against an anchor run alongside it in the same process.

    python bench/run.py                  # full run (about 3 minutes on 2 cores), prints the table
    python bench/run.py --quick          # smaller sizes, a smoke check (not for the targets)
    python bench/run.py --only NAME      # one benchmark (repeatable); see --help for the names
    python bench/run.py --json out.json  # also write {name: {value, unit, anchor, ratio, ...}}

How the noise of a shared 2-core machine is kept out of the ratios: a measurement and its anchor
are interleaved chunk by chunk (a few hundred events or one batch at a time, the order rotating),
so both see the same momentary load; each repetition gives one ratio. The table shows medians
over the repetitions: value = median engine rate, anchor = median anchor rate, ratio = median
of the per-repetition ratios (so not exactly value/anchor), and the smallest..largest ratio.

Databases live in a fresh temporary directory; entities are created beforehand with
`Engine.create_many` (untimed) and copied as closed files for each repetition.

The runtime rows drive the real worker: a refresh cycle of simulated services on SQLite against
the same events triggered in memory (and its growth from 10k to 100k entities), backend calls per
cycle, two worker processes against one on PostgreSQL (a fresh schema, dropped afterwards; the
1- and 2-worker runs alternate), Slurm calls per cycle, and the wall time of `fsm demo`.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Any

import psycopg
from benchlib import (
    CYCLE_AT,
    SERVICE,
    SIM_ORIGIN,
    MemoryStore,
    Paired,
    RawModel,
    RawSqliteWriter,
    Rules,
    SimPlan,
    alternate,
    batch_event,
    build_sim_template,
    build_template,
    copy_database,
    count_transitions,
    each,
    env_summary,
    fresh_row,
    life_event,
    memory_plan,
    raw_machine,
    replay,
    sim_backend,
    sim_clock,
    sim_plan,
    sliced,
    spread_slots,
    sqlite_url,
)
from pg_worker import TIME_SCALE as PG_TIME_SCALE
from slurm_bench import measure_slurm_calls
from sqlmodel import Session, col, select

from backends.sim import SimBackend, populate
from fsm import Engine, Event, ManualClock, Store, TickStats, Worker, WorkerSettings
from storage.tables import EntityTable, TransitionTable

BENCH_DIR = Path(__file__).resolve().parent
PG_URL = os.environ.get(
    "FSM_BENCH_PG_URL",
    os.environ.get("FSM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
)


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    quick: bool
    batch_size: int  # events per Engine.apply in persist_batch, growth and memory_per_entity
    memory_events: int  # apply_memory: events per repetition ...
    memory_chunk: int  # ... interleaved with the anchor in chunks of this many
    memory_reps: int
    single_n: int  # persist_single: commits per repetition ...
    single_chunk: int  # ... interleaved with the anchor in chunks of this many
    single_reps: int
    big_n: int  # persist_batch entities (growth: the large size)
    small_n: int  # growth: the small size (big_n / 10)
    batch_reps: int
    small_runs: int  # small databases per repetition (the median of their times is used)
    naive_single_n: int
    naive_batch_n: int
    naive_reps: int
    tracemalloc_limit: int  # entities for the tracemalloc cross-check (0: skip it)
    refresh_big: int  # refresh_cycle_100k: sim services in the cycle (growth: the large size)
    refresh_small: int  # refresh_growth: the small size (refresh_big / 10)
    refresh_reps: int
    refresh_small_runs: int  # small databases per repetition (the median of their times)
    refresh_tick: int  # batches per Worker.refresh call (max_batches_per_tick): one lane chunk
    calls_entities: int  # backend_calls_per_cycle
    pg_per_run: int  # pg_two_workers: services due in each run ...
    pg_pairs: int  # ... and pairs of runs (1 worker, 2 workers; the order alternating)

    @classmethod
    def full(cls, batch_size: int) -> Config:
        return cls(
            quick=False,
            batch_size=batch_size,
            memory_events=30_000,
            memory_chunk=1_000,
            memory_reps=5,
            single_n=400,
            single_chunk=20,
            single_reps=5,
            big_n=100_000,
            small_n=10_000,
            batch_reps=3,
            small_runs=3,
            naive_single_n=150,
            naive_batch_n=5_000,
            naive_reps=3,
            tracemalloc_limit=10_000,
            refresh_big=100_000,
            refresh_small=10_000,
            refresh_reps=3,
            refresh_small_runs=2,
            refresh_tick=5,
            calls_entities=1_000,
            pg_per_run=4_000,
            pg_pairs=4,
        )

    @classmethod
    def small(cls, batch_size: int) -> Config:
        return cls(
            quick=True,
            batch_size=batch_size,
            memory_events=10_000,
            memory_chunk=1_000,
            memory_reps=3,
            single_n=150,
            single_chunk=15,
            single_reps=3,
            big_n=20_000,
            small_n=2_000,
            batch_reps=2,
            small_runs=2,
            naive_single_n=60,
            naive_batch_n=2_000,
            naive_reps=2,
            tracemalloc_limit=4_000,
            refresh_big=20_000,
            refresh_small=2_000,
            refresh_reps=1,
            refresh_small_runs=2,
            refresh_tick=5,
            calls_entities=1_000,
            pg_per_run=1_000,
            pg_pairs=2,
        )


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    op: str  # ">=", "<=" or "=="
    bound: float
    on: str = "ratio"  # what the bound applies to: "ratio" or "value"

    def met(self, figure: float) -> bool:
        if self.op == "==":
            return math.isclose(figure, self.bound)
        return figure >= self.bound if self.op == ">=" else figure <= self.bound

    def __str__(self) -> str:
        text = f"{'=' if self.op == '==' else self.op} {self.bound:g}"
        return text if self.on == "ratio" else f"{text} ({self.on})"


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    value: float
    unit: str
    anchor: float
    anchor_unit: str
    ratio: float
    target: Target | None
    ratio_min: float | None = None
    ratio_max: float | None = None
    reps: int = 1
    notes: str = ""

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.target.met(self.value if self.target.on == "value" else self.ratio)

    @classmethod
    def from_paired(
        cls,
        name: str,
        runs: Paired,
        unit: str,
        anchor_unit: str,
        target: Target | None,
        notes: str,
    ) -> Result:
        ratios = runs.ratios
        return cls(
            name,
            runs.value,
            unit,
            runs.anchor,
            anchor_unit,
            runs.ratio,
            target,
            min(ratios),
            max(ratios),
            len(ratios),
            notes,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "anchor": self.anchor,
            "anchor_unit": self.anchor_unit,
            "ratio": self.ratio,
            "target": None if self.target is None else str(self.target),
            "pass": self.passed,
            "ratio_min": self.ratio_min,
            "ratio_max": self.ratio_max,
            "reps": self.reps,
            "notes": self.notes,
        }


def rate_pair(values: Sequence[float], anchors: Sequence[float], count: int) -> Paired:
    """Seconds -> per-second rates for `count` operations."""
    return Paired(tuple(count / v for v in values), tuple(count / a for a in anchors))


# -- the benchmarks --------------------------------------------------------------------------


class Bench:
    def __init__(self, cfg: Config, workdir: Path, pg_url: str = PG_URL) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.pg_url = pg_url
        self.skipped: list[str] = []
        self._templates: dict[int, tuple[Path, list[str]]] = {}
        self._sim_templates: dict[int, tuple[Path, SimPlan]] = {}
        self._copies = 0

    def log(self, text: str) -> None:
        print(f"  .. {text}", file=sys.stderr, flush=True)

    def template(self, count: int) -> tuple[Path, list[str]]:
        """A closed database of `count` fresh entities (setup, untimed), built once per run."""
        if count not in self._templates:
            path = self.workdir / f"template-{count}.db"
            started = perf_counter()
            ids = build_template(path, count)
            took = perf_counter() - started
            self.log(f"setup: {count:,} entities via Engine.create_many in {took:.1f}s")
            self._templates[count] = (path, ids)
        return self._templates[count]

    def fresh_copy(self, count: int) -> tuple[Path, list[str]]:
        template, ids = self.template(count)
        self._copies += 1
        return copy_database(template, self.workdir / f"run-{self._copies}.db"), ids

    def discard(self, path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    # apply_memory ------------------------------------------------------------------------------

    def apply_memory(self) -> list[Result]:
        cfg = self.cfg
        store = MemoryStore()
        engine = Engine(store, migrate=False)
        lifecycle = engine.lifecycle(SERVICE)
        names = memory_plan(cfg.memory_events)
        entity_id = "bench-memory"
        events = [Event(entity_id, name) for name in names]
        machine, model = raw_machine(lifecycle.definition)
        size = cfg.memory_chunk
        chunks = len(events) // size
        decide_s: list[float] = []
        apply_s: list[float] = []
        raw_s: list[float] = []

        for rep in range(cfg.memory_reps + 1):  # the first repetition warms up
            # Engine.stage(...).add: what Engine.apply runs per event (decide, build the transition
            # record and the outcome), without the read before it and the flush after it.
            row = fresh_row(entity_id, lifecycle, engine.clock())
            with store.transaction() as uow:
                staged = engine.stage(uow, {entity_id: row})
            store.rows = {entity_id: row}
            machine.set_state(lifecycle.initial, model=model)
            lanes = [
                sliced(events, size, each(staged.add)),
                sliced(events, size, engine.apply),
                sliced(names, size, each(model.trigger)),
            ]
            gc.collect()
            t_decide, t_apply, t_raw = alternate(chunks, lanes)
            head = staged.head(entity_id)
            final = {
                "stage": head.state if head is not None else "?",
                "apply": store.rows[entity_id].state,
                "raw": model.state,
            }
            if len(set(final.values())) != 1:
                raise RuntimeError(f"engine and anchor disagree on the final state: {final}")
            if rep:
                decide_s.append(t_decide)
                apply_s.append(t_apply)
                raw_s.append(t_raw)
        n = chunks * size
        return [
            Result.from_paired(
                "apply_memory",
                rate_pair(decide_s, raw_s, n),
                "events/s",
                "events/s",
                Target(">=", 0.8),
                f"{n:,} events on one entity (guarded ping_failed included), interleaved in "
                f"chunks of {size:,}: Engine.stage(...).add per event (decision, transition "
                "record, outcome; no database) vs a plain Machine(model=obj).trigger",
            ),
            Result.from_paired(
                "apply_memory_batch",
                rate_pair(apply_s, raw_s, n),
                "events/s",
                "events/s",
                None,
                f"reference, no target: whole Engine.apply, one call per {size:,} events, on a "
                "dict-backed store (no database)",
            ),
        ]

    # persist_single ----------------------------------------------------------------------------

    def persist_single(self) -> list[Result]:
        cfg = self.cfg
        n, size = cfg.single_n, cfg.single_chunk
        engine_db, engine_ids = self.new_database(n, "single-engine")
        raw_db, raw_ids = self.new_database(n, "single-raw")
        engine = Engine(sqlite_url(engine_db))
        writer = RawSqliteWriter(raw_db, Rules(engine.lifecycle(SERVICE)), raw_ids)
        engine_s: list[float] = []
        raw_s: list[float] = []
        for rep in range(cfg.single_reps + 1):  # the first repetition warms up
            event = life_event(rep)  # every entity moves once per repetition
            lanes = [
                sliced(engine_ids, size, each(partial(fire_one, engine, event))),
                sliced(raw_ids, size, each(partial(raw_one, writer, event))),
            ]
            gc.collect()
            t_engine, t_raw = alternate(-(-n // size), lanes)
            if rep:
                engine_s.append(t_engine)
                raw_s.append(t_raw)
        engine.close()
        writer.close()
        expected = n * (cfg.single_reps + 1)
        if count_transitions(engine_db) != expected or count_transitions(raw_db) != expected:
            raise RuntimeError("persist_single wrote an unexpected number of transitions")
        return [
            Result.from_paired(
                "persist_single",
                rate_pair(engine_s, raw_s, n),
                "commits/s",
                "commits/s",
                Target(">=", 0.5),
                f"{n} Engine.fire per repetition, interleaved in chunks of {size}, one transition "
                "per commit, SQLite file (WAL, synchronous=NORMAL); anchor: sqlite3 BEGIN "
                "IMMEDIATE, versioned UPDATE, INSERT, COMMIT on the same schema",
            )
        ]

    def new_database(self, count: int, name: str) -> tuple[Path, list[str]]:
        """A new database of `count` fresh entities (setup), not shared with other runs."""
        path = self.workdir / f"{name}.db"
        return path, build_template(path, count)

    # persist_batch and growth ------------------------------------------------------------------

    def persist_batch(self) -> list[Result]:
        """persist_batch and growth, from the same repetitions.

        Each repetition opens fresh copies of the big database and of `small_runs` small ones,
        then interleaves batch by batch: a big batch, the anchor's triggers for the same events,
        and now and then a batch of one of the small databases (spread evenly over the run).
        """
        cfg = self.cfg
        big, small, size = cfg.big_n, cfg.small_n, cfg.batch_size
        _, big_ids = self.template(big)
        _, small_ids = self.template(small)
        big_events = [Event(i, batch_event(k)) for k, i in enumerate(big_ids)]
        small_events = [Event(i, batch_event(k)) for k, i in enumerate(small_ids)]
        names = [batch_event(k) for k in range(big)]
        lifecycle = Engine(MemoryStore(), migrate=False).lifecycle(SERVICE)
        _machine, model = raw_machine(lifecycle.definition)
        big_chunks = -(-big // size)
        small_chunks = -(-small // size)
        slots = spread_slots(big_chunks, small_chunks * cfg.small_runs)
        big_s: list[float] = []
        raw_s: list[float] = []
        small_s: list[float] = []

        for _rep in range(cfg.batch_reps):
            big_path, _ = self.fresh_copy(big)
            small_paths = [self.fresh_copy(small)[0] for _ in range(cfg.small_runs)]
            engine = Engine(sqlite_url(big_path))  # opening and the schema check: setup
            smalls = SmallRuns([Engine(sqlite_url(p)) for p in small_paths], small_events, size)
            for j, slot in enumerate(slots):
                run, batch_no = divmod(j, small_chunks)
                smalls.plan(slot, run, batch_no)
            lanes = [
                sliced(big_events, size, engine.apply),
                sliced(names, size, each(partial(first_trigger, model, lifecycle.initial))),
                smalls.lane,
            ]
            gc.collect()
            t_big, t_raw, _ = alternate(big_chunks, lanes)
            engine.close()
            smalls.close()
            if count_transitions(big_path) != big or any(
                count_transitions(p) != small for p in small_paths
            ):
                raise RuntimeError("persist_batch did not record one transition per entity")
            for path in (big_path, *small_paths):
                self.discard(path)
            big_s.append(t_big)
            raw_s.append(t_raw)
            small_s.append(statistics.median(smalls.seconds))

        growth_values = tuple(b / s for b, s in zip(big_s, small_s, strict=True))
        per_big = statistics.median(big_s) / big * 1e6
        per_small = statistics.median(small_s) / small * 1e6
        growth = Result(
            "growth",
            statistics.median(growth_values),
            f"x t({big // 1000}k)/t({small // 1000}k)",
            10.0,
            "x (linear)",
            statistics.median(growth_values) / 10.0,
            Target("<=", 1.1),
            min(growth_values) / 10.0,
            max(growth_values) / 10.0,
            len(growth_values),
            f"persist_batch time at {big:,} vs {small:,} fresh entities (median of "
            f"{cfg.small_runs} small databases per repetition, their batches interleaved with "
            f"the big run); ratio = (t_big/t_small)/10, i.e. the per-entity cost ratio "
            f"({per_big:.1f} vs {per_small:.1f} us/event)",
        )
        return [
            Result.from_paired(
                "persist_batch",
                rate_pair(big_s, raw_s, big),
                "transitions/s",
                "triggers/s",
                Target(">=", 0.5),
                f"{big:,} fresh entities, one transition each, Engine.apply batches of {size:,}; "
                "anchor: the same triggers on one plain Machine model, in memory, interleaved "
                "batch by batch",
            ),
            growth,
        ]

    # memory_per_entity -------------------------------------------------------------------------

    def memory_per_entity(self) -> list[Result]:
        cfg = self.cfg
        report = self._probe(cfg.big_n, tracemalloc=False)
        value = float(report["rss_peak_per_entity"])
        notes = (
            f"fresh process; (peak VmRSS - VmRSS before the first batch) / {report['entities']:,} "
            f"entities, batches of {report['batch']:,}; peak {report['peak_rss'] / 2**20:.1f} "
            f"MiB over a {report['baseline_rss'] / 2**20:.1f} MiB baseline; growth after the "
            f"first batch {report['rss_steady_slope']:.1f} B/entity; kept after gc "
            f"{report['rss_retained_per_entity']:.1f} B/entity"
        )
        if cfg.tracemalloc_limit:
            traced = self._probe(cfg.big_n, tracemalloc=True, limit=cfg.tracemalloc_limit)
            notes += (
                f"; tracemalloc: {traced['traced_peak_per_inflight_event']:,.0f} B of Python "
                f"objects per in-flight event of a batch, "
                f"{traced['traced_retained_per_entity']:.1f} B/entity kept"
            )
        return [
            Result(
                "memory_per_entity",
                value,
                "B/entity",
                1024.0,
                "B/entity",
                value / 1024.0,
                Target("<=", 1.0),
                notes=notes,
            )
        ]

    def _probe(self, count: int, *, tracemalloc: bool, limit: int = 0) -> dict[str, Any]:
        path, _ = self.fresh_copy(count)
        command = [
            sys.executable,
            str(BENCH_DIR / "memory_probe.py"),
            "--db",
            str(path),
            "--batch",
            str(self.cfg.batch_size),
            "--limit",
            str(limit),
        ]
        if tracemalloc:
            command.append("--tracemalloc")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        self.discard(path)
        if done.returncode != 0:
            raise RuntimeError(f"memory probe failed:\n{done.stderr}")
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    # the naive ORM route, for reference --------------------------------------------------------

    def naive(self) -> list[Result]:
        cfg = self.cfg
        results = []
        for name, n, chunk in (
            ("naive_orm_single", cfg.naive_single_n, 1),
            ("naive_orm_batch", cfg.naive_batch_n, 1000),
        ):
            engine_db, engine_ids = self.new_database(n, f"{name}-engine")
            orm_db, orm_ids = self.new_database(n, f"{name}-orm")
            engine = Engine(sqlite_url(engine_db))
            orm = NaiveOrm(Store(sqlite_url(orm_db)), Rules(engine.lifecycle(SERVICE)))
            lane_size = 10 if chunk == 1 else chunk  # ten commits per lane chunk
            orm_s: list[float] = []
            engine_s: list[float] = []
            for rep in range(cfg.naive_reps + 1):  # the first repetition warms up
                event = life_event(rep)
                if chunk == 1:
                    lanes = [
                        sliced(orm_ids, lane_size, partial(orm.one_per_commit, event=event)),
                        sliced(engine_ids, lane_size, each(partial(fire_one, engine, event))),
                    ]
                else:
                    events = [Event(i, event) for i in engine_ids]
                    lanes = [
                        sliced(orm_ids, lane_size, partial(orm.batched, event=event)),
                        sliced(events, lane_size, engine.apply),
                    ]
                gc.collect()
                t_orm, t_engine = alternate(-(-n // lane_size), lanes)
                if rep:
                    orm_s.append(t_orm)
                    engine_s.append(t_engine)
            engine.close()
            orm.close()
            if chunk == 1:
                what = "session.get + modify + add transition + commit, per event"
                anchor = "Engine.fire"
            else:
                what = f"one SELECT .. IN + modify + add + commit per {chunk:,} events"
                anchor = f"Engine.apply of {chunk:,}"
            results.append(
                Result.from_paired(
                    name,
                    rate_pair(orm_s, engine_s, n),
                    "transitions/s",
                    "transitions/s",
                    None,
                    f"reference, no target: SQLModel Session, {what} ({n:,} entities); "
                    f"anchor: {anchor} on the same workload; ratio = ORM / engine",
                )
            )
        return results

    # refresh_cycle_100k and refresh_growth ----------------------------------------------------

    def sim_template(self, count: int) -> tuple[Path, SimPlan]:
        """A closed database of `count` sim services recorded PENDING, and what the measured
        cycle observes in it (setup, untimed), built once per run."""
        if count not in self._sim_templates:
            path = self.workdir / f"sim-template-{count}.db"
            started = perf_counter()
            ids = build_sim_template(path, count)
            definition = Engine(MemoryStore(), migrate=False).lifecycle(SERVICE).definition
            plan = sim_plan(path, ids, definition)
            took = perf_counter() - started
            self.log(
                f"setup: {count:,} sim services recorded PENDING, their observations computed, "
                f"in {took:.1f}s"
            )
            self._sim_templates[count] = (path, plan)
        return self._sim_templates[count]

    def fresh_sim_copy(self, count: int) -> tuple[Path, SimPlan]:
        template, plan = self.sim_template(count)
        self._copies += 1
        return copy_database(template, self.workdir / f"run-{self._copies}.db"), plan

    def refresh_cycle(self) -> list[Result]:
        """refresh_cycle_100k and refresh_growth, from the same repetitions.

        Each repetition opens fresh copies of the big sim database and of `refresh_small_runs`
        small ones, then interleaves call by call: a `Worker.refresh()` of `refresh_tick`
        batches on the big database, the anchor's triggers for as many entities, and now and
        then such a call on one of the small databases. The clock is a fixed ManualClock, so
        every call claims with the same `due_by`; the calls go on until nothing is due, i.e.
        together they are one refresh cycle in which every entity is claimed once.
        """
        cfg = self.cfg
        big, small = cfg.refresh_big, cfg.refresh_small
        batch = WorkerSettings().batch_size
        per_call = batch * cfg.refresh_tick
        _, big_plan = self.sim_template(big)
        _, small_plan = self.sim_template(small)
        lifecycle = Engine(MemoryStore(), migrate=False).lifecycle(SERVICE)
        _machine, model = raw_machine(lifecycle.definition)
        big_chunks = -(-big // per_call)
        small_chunks = -(-small // per_call)
        slots = spread_slots(big_chunks, small_chunks * cfg.refresh_small_runs)
        big_s: list[float] = []
        raw_s: list[float] = []
        small_s: list[float] = []
        moved: list[float] = []
        big_run: RefreshRun | None = None

        for _rep in range(cfg.refresh_reps):
            big_path, _ = self.fresh_sim_copy(big)
            small_paths = [self.fresh_sim_copy(small)[0] for _ in range(cfg.refresh_small_runs)]
            big_run = RefreshRun(big_path, batch, cfg.refresh_tick)  # opening: setup
            smalls = SmallCycles([RefreshRun(p, batch, cfg.refresh_tick) for p in small_paths])
            for j, slot in enumerate(slots):
                smalls.plan(slot, j // small_chunks)
            lanes = [
                big_run.lane,
                sliced(big_plan.steps, per_call, partial(replay, model)),
                smalls.lane,
            ]
            gc.collect()
            t_big, t_raw, _ = alternate(big_chunks, lanes)
            big_run.finish(big_plan)
            for run in smalls.runs:
                run.finish(small_plan)
            moved.append(big_run.moved / big)
            for path in (big_path, *small_paths):
                self.discard(path)
            big_s.append(t_big)
            raw_s.append(t_raw)
            small_s.append(statistics.median(smalls.seconds))

        assert big_run is not None
        growth_values = tuple(b / s for b, s in zip(big_s, small_s, strict=True))
        per_big = statistics.median(big_s) / big * 1e6
        per_small = statistics.median(small_s) / small * 1e6
        stats = big_run.stats
        growth = Result(
            "refresh_growth",
            statistics.median(growth_values),
            f"x t({big // 1000}k)/t({small // 1000}k)",
            10.0,
            "x (linear)",
            statistics.median(growth_values) / 10.0,
            Target("<=", 1.1),
            min(growth_values) / 10.0,
            max(growth_values) / 10.0,
            len(growth_values),
            f"refresh cycle time at {big:,} vs {small:,} sim services (median of "
            f"{cfg.refresh_small_runs} small databases per repetition, their Worker.refresh "
            f"calls interleaved with the big cycle); ratio = (t_big/t_small)/10, i.e. the "
            f"per-entity cost ratio ({per_big:.1f} vs {per_small:.1f} us/entity)",
        )
        return [
            Result.from_paired(
                "refresh_cycle_100k",
                rate_pair(big_s, raw_s, big),
                "entities/s",
                "entities/s",
                Target(">=", 0.5),
                f"one refresh cycle of {big:,} sim services, all due, on a SQLite file: "
                f"Worker.refresh() calls of {cfg.refresh_tick} batches of {batch} on a fixed "
                f"ManualClock (so one due_by) until nothing is due; {statistics.median(moved):.1%}"
                f" of the services transitioned ({stats.transitions:,} transitions from "
                f"{big_plan.events:,} observed events; {stats.backend_calls:,} observe calls "
                f"for {stats.batches:,} batches); anchor: the same events triggered on one "
                f"plain Machine model in memory (set to each entity's recorded state first), "
                f"interleaved call by call",
            ),
            growth,
        ]

    # backend_calls_per_cycle ------------------------------------------------------------------

    def backend_calls(self) -> list[Result]:
        count = self.cfg.calls_entities
        batch = WorkerSettings().batch_size
        path = self.workdir / "backend-calls.db"
        engine = Engine(sqlite_url(path), clock=ManualClock(SIM_ORIGIN))
        try:
            sim = SimBackend(0)
            hosts = operations = count // 20
            populate(
                engine, sim, services=count - hosts - operations, hosts=hosts, operations=operations
            )
            worker = Worker(engine, [sim], settings=WorkerSettings(batch_size=batch))
            before = sim.calls
            stats = worker.refresh()
            calls = sim.calls - before
            again = worker.refresh()
        finally:
            engine.close()
        self.discard(path)
        batches = -(-count // batch)
        if stats.claimed != count or again.claimed or stats.batches != batches:
            raise RuntimeError(
                f"backend_calls_per_cycle: claimed {stats.claimed} in {stats.batches} batches"
            )
        return [
            Result(
                "backend_calls_per_cycle",
                float(calls),
                "calls/cycle",
                float(batches),
                "batches",
                calls / batches,
                Target("==", 1.0),
                notes=f"SimBackend.observe calls in one Worker.refresh() of {count:,} due "
                f"entities of the sim backend ({count - hosts - operations:,} services, {hosts} "
                f"hosts, {operations} operations), batches of {batch}; anchor: the batch count",
            )
        ]

    # pg_two_workers ---------------------------------------------------------------------------

    def pg_two_workers(self) -> list[Result]:
        cfg = self.cfg
        try:
            with psycopg.connect(self.pg_url, connect_timeout=3):
                pass
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            self.skipped.append(f"pg_two_workers: PostgreSQL at {self.pg_url}: {reason}")
            return []
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        base = self.pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
        url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
        batch = WorkerSettings().batch_size
        one: list[float] = []
        two: list[float] = []
        usage: dict[int, list[Usage]] = {1: [], 2: []}
        shares: list[list[int]] = []
        engine: Engine | None = None
        workers: PgWorkers | None = None
        try:
            engine = Engine(url)  # creates the schema's tables
            workers = PgWorkers(url, 2, batch, self.workdir)
            sim = SimBackend(0, time_scale=PG_TIME_SCALE)
            for pair in range(cfg.pg_pairs):
                for n in (1, 2) if pair % 2 == 0 else (2, 1):
                    populate(engine, sim, services=cfg.pg_per_run, prefix=f"r{pair}w{n}")
                    with engine.store.engine.begin() as conn:
                        conn.exec_driver_sql("ANALYZE entity")  # as autovacuum would
                    gc.collect()
                    rate, used, reports = workers.run(n, cfg.pg_per_run)
                    (one if n == 1 else two).append(rate)
                    usage[n].append(used)
                    if n == 2:
                        shares.append([r["claimed"] for r in reports])
        finally:
            if workers is not None:
                workers.close()
            if engine is not None:
                engine.close()
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        split = ", ".join("/".join(str(c) for c in s) for s in shares)
        return [
            Result.from_paired(
                "pg_two_workers",
                Paired(tuple(two), tuple(one)),
                "entities/s",
                "entities/s",
                Target(">=", 1.3),
                f"PostgreSQL, real processes (bench/pg_worker.py, started once, each told when "
                f"to go): {cfg.pg_pairs} pairs of runs, 1 worker then 2 or the reverse, each run "
                f"refreshing {cfg.pg_per_run:,} newly created due sim services once (claim with "
                f"lease + SKIP LOCKED, one observe call and one transaction per batch of {batch}"
                f"); rate = services / (last worker's end - first worker's start); shares of "
                f"the 2-worker runs: {split}; {describe_usage(usage)}",
            )
        ]

    # slurm_calls_per_cycle --------------------------------------------------------------------

    def slurm_calls(self) -> list[Result]:
        found = measure_slurm_calls()
        value = float(found["value"])
        return [
            Result(
                "slurm_calls_per_cycle",
                value,
                "calls/cycle",
                2.0,
                "calls/cycle",
                value / 2.0,
                Target("<=", 2.0, on="value"),
                notes=f"bench/slurm_bench.py on the {found['source']}: {found['tracked']} "
                f"tracked jobs, scheduler calls per cycle {found['calls_per_cycle']} (the worst "
                f"is the value), cycle seconds {found['cycle_seconds']}",
            )
        ]

    # demo_wall_seconds ------------------------------------------------------------------------

    def demo(self) -> list[Result]:
        folder = self.workdir / "demo"
        folder.mkdir()
        command = [sys.executable, "-m", "fsm", "demo", "--db", sqlite_url(folder / "fsm-demo.db")]
        started = perf_counter()
        done = subprocess.run(
            command, cwd=folder, capture_output=True, text=True, timeout=300, check=False
        )
        wall = perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(
                f"fsm demo exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        own = next(
            (line.strip() for line in done.stdout.splitlines() if "finished in" in line), "?"
        )
        return [
            Result(
                "demo_wall_seconds",
                wall,
                "s",
                40.0,
                "s",
                wall / 40.0,
                Target("<=", 40.0, on="value"),
                notes=f"wall time of `python -m fsm demo --db sqlite:///<tmp>/fsm-demo.db` as a "
                f"subprocess in a temporary directory, exit 0 (interpreter start-up and the "
                f"closing summary included); the demo itself says: {own}",
            )
        ]


def describe_usage(usage: dict[int, list[Usage]]) -> str:
    """Medians of the CPU figures of the 1- and 2-worker runs, for the notes."""
    parts = []
    for n, runs in usage.items():
        worker = statistics.median(u.worker_per_entity for u in runs) * 1e6
        text = f"{n} worker{'s' if n > 1 else ''}: {worker:.0f} us CPU/service in the worker"
        servers = [u.server_per_entity for u in runs if u.server_per_entity is not None]
        if servers:
            text += f" + {statistics.median(servers) * 1e6:.0f} us in its PostgreSQL backend"
        busy = [u.machine_busy for u in runs if u.machine_busy is not None]
        if busy:
            text += f", machine {statistics.median(busy):.2f} of {os.cpu_count()} cores busy"
        parts.append(text)
    cores = os.cpu_count() or 1
    alone = [u.machine_busy for u in usage[1] if u.machine_busy is not None]
    if alone and statistics.median(alone) > cores - 0.5:
        parts.append(
            "other processes already kept the machine busy during the 1-worker runs: there was "
            "little spare CPU for a second worker, so this ratio measures the load as much as "
            "the engine"
        )
    return "; ".join(parts)


class RefreshRun:
    """A worker on a copy of a sim template, at CYCLE_AT on a fixed clock; one lane chunk is one
    `Worker.refresh()` (at most `tick` batches), timed."""

    def __init__(self, path: Path, batch: int, tick: int) -> None:
        self.path = path
        self.engine = Engine(sqlite_url(path), clock=sim_clock(CYCLE_AT))
        self.sim = sim_backend()
        settings = WorkerSettings(batch_size=batch, max_batches_per_tick=tick)
        self.worker = Worker(self.engine, [self.sim], settings=settings)
        self.stats = TickStats()
        self.seconds = 0.0
        self.moved = 0

    def lane(self, _chunk: int) -> float:
        started = perf_counter()
        stats = self.worker.refresh()
        elapsed = perf_counter() - started
        self.stats.add(stats)
        self.seconds += elapsed
        return elapsed

    def finish(self, plan: SimPlan) -> None:
        """Check the cycle claimed every entity once and applied what the plan says."""
        leftover = self.worker.refresh()
        self.engine.close()
        stats = self.stats
        entities = len(plan.steps)
        with sqlite3.connect(self.path) as conn:
            (moved,) = conn.execute(
                "SELECT count(DISTINCT entity_id) FROM transition WHERE seq > 1"
            ).fetchone()
        self.moved = int(moved)
        if (
            leftover.claimed
            or stats.claimed != entities
            or stats.transitions != plan.transitions
            or self.moved != plan.moved
            or stats.failed_observations
            or stats.rejected_events
            or stats.backend_calls != stats.batches
        ):
            raise RuntimeError(
                f"the refresh cycle did not do what the sim plan says: {stats}, moved "
                f"{self.moved} (plan: {entities} entities, {plan.transitions} transitions, "
                f"{plan.moved} moved)"
            )


class SmallCycles:
    """The small databases of refresh_growth, their refresh calls run beside the big cycle."""

    def __init__(self, runs: list[RefreshRun]) -> None:
        self.runs = runs
        self._beside: dict[int, list[int]] = {}

    @property
    def seconds(self) -> list[float]:
        return [run.seconds for run in self.runs]

    def plan(self, big_chunk: int, run: int) -> None:
        self._beside.setdefault(big_chunk, []).append(run)

    def lane(self, big_chunk: int) -> float:
        return sum(self.runs[run].lane(big_chunk) for run in self._beside.get(big_chunk, ()))


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU during one pg_two_workers run."""

    machine_busy: float | None  # cores busy on the whole machine (every process, ours or not)
    worker_per_entity: float  # CPU seconds of the worker processes per service refreshed
    server_per_entity: float | None  # ... of their PostgreSQL backends (None: not readable)


def machine_cpu() -> tuple[int, int] | None:
    """(all jiffies, idle jiffies) of the machine so far, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return sum(fields), fields[3] + fields[4]


def process_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of a local process (None: not local or not readable)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PgWorkers:
    """Worker processes (bench/pg_worker.py) kept running; `run(n)` lets the first n refresh
    what is due and returns the rate over the span from the first start to the last end."""

    def __init__(self, url: str, count: int, batch: int, workdir: Path) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.logs = [workdir / f"pg-worker-{i}.log" for i in range(count)]
        self.backends: list[int | None] = []
        try:
            self._start(url, batch)
        except BaseException:
            self.close()
            raise

    def _start(self, url: str, batch: int) -> None:
        for i, log in enumerate(self.logs):
            with log.open("w") as err:
                command = [
                    sys.executable,
                    str(BENCH_DIR / "pg_worker.py"),
                    "--db",
                    url,
                    "--batch-size",
                    str(batch),
                    "--worker-id",
                    f"bench-{i}",
                ]
                self.procs.append(
                    subprocess.Popen(
                        command,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                    )
                )
        for i in range(len(self.logs)):
            word, _, pid = self._line(i).partition(" ")
            if word != "ready":
                raise RuntimeError(f"pg worker {i} said {word!r}, not 'ready'")
            self.backends.append(int(pid) if pid.isdigit() else None)

    def _line(self, i: int) -> str:
        proc = self.procs[i]
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"pg worker {i} ended:\n{self.logs[i].read_text()[-2000:]}")
        return line.strip()

    def run(self, n: int, due: int) -> tuple[float, Usage, list[dict[str, Any]]]:
        """Let the first `n` workers refresh the `due` services; their rate and CPU use."""
        machine = machine_cpu()
        servers = [process_cpu(pid) for pid in self.backends[:n]]
        for proc in self.procs[:n]:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = [json.loads(self._line(i)) for i in range(n)]
        machine_after = machine_cpu()
        servers_after = [process_cpu(pid) for pid in self.backends[:n]]
        claimed = sum(r["claimed"] for r in reports)
        if claimed != due or sum(r["transitions"] for r in reports) != due:
            raise RuntimeError(f"pg workers refreshed {claimed} of {due} due services: {reports}")
        if any(r["backend_calls"] != r["batches"] for r in reports):
            raise RuntimeError(f"pg workers made more than one observe call per batch: {reports}")
        span = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
        busy = None
        if machine is not None and machine_after is not None:
            total = machine_after[0] - machine[0]
            idle = machine_after[1] - machine[1]
            busy = (1 - idle / total) * (os.cpu_count() or 1) if total else None
        server: float | None = None
        spent = [
            b - a
            for a, b in zip(servers, servers_after, strict=True)
            if a is not None and b is not None
        ]
        if len(spent) == n:
            server = sum(spent) / due
        usage = Usage(busy, sum(r["cpu"] for r in reports) / due, server)
        return due / span, usage, reports

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def fire_one(engine: Engine, event: str, entity_id: str) -> None:
    engine.fire(entity_id, event)


def raw_one(writer: RawSqliteWriter, event: str, entity_id: str) -> None:
    writer.step(entity_id, event)


def first_trigger(model: RawModel, initial: str, name: str) -> None:
    """The anchor for a fresh entity's one event: put the one model back, then trigger."""
    model.state = initial
    model.trigger(name)


class SmallRuns:
    """The small databases of the growth measurement, run beside chunks of the big one."""

    def __init__(self, engines: list[Engine], events: Sequence[Event], size: int) -> None:
        self.engines = engines
        self.events = events
        self.size = size
        self.seconds = [0.0] * len(engines)
        self._beside: dict[int, list[tuple[int, int]]] = {}

    def plan(self, big_chunk: int, run: int, batch_no: int) -> None:
        self._beside.setdefault(big_chunk, []).append((run, batch_no * self.size))

    def lane(self, big_chunk: int) -> float:
        spent = 0.0
        for run, start in self._beside.get(big_chunk, ()):
            part = self.events[start : start + self.size]
            started = perf_counter()
            self.engines[run].apply(part)
            elapsed = perf_counter() - started
            self.seconds[run] += elapsed
            spent += elapsed
        return spent

    def close(self) -> None:
        for engine in self.engines:
            engine.close()


class NaiveOrm:
    """The route the engine replaces: SQLModel objects, the unit of work, commit."""

    def __init__(self, store: Store, rules: Rules) -> None:
        self.store = store
        self.rules = rules

    def _move(self, session: Session, entity: EntityTable, event: str) -> None:
        rules = self.rules
        now = datetime.now(UTC)
        source = entity.state
        dest = rules.dest[(source, event)]
        limit = rules.limit[dest]
        refresh = rules.refresh[dest]
        entity.state = dest
        entity.terminal = dest in rules.terminal
        entity.version += 1
        entity.seq += 1
        entity.state_entered_at = now
        entity.deadline_at = None if limit is None else now + limit
        entity.next_refresh_at = None if refresh is None else now + refresh
        entity.updated_at = now
        session.add(entity)
        session.add(
            TransitionTable(
                entity_id=entity.id,
                seq=entity.seq,
                from_state=source,
                to_state=dest,
                event=event,
                source="user",
                payload={},
                observed_at=now,
                recorded_at=now,
                definition_version=rules.version,
            )
        )

    def one_per_commit(self, ids: Sequence[str], event: str) -> None:
        """One commit per entity of `ids`."""
        with Session(self.store.engine) as session:
            for entity_id in ids:
                entity = session.get(EntityTable, entity_id)
                if entity is None:
                    raise RuntimeError(f"no entity {entity_id}")
                self._move(session, entity, event)
                session.commit()

    def batched(self, ids: Sequence[str], event: str) -> None:
        """All of `ids` in one commit (one SELECT .. IN to load them)."""
        with Session(self.store.engine) as session:
            query = select(EntityTable).where(col(EntityTable.id).in_(list(ids)))
            for entity in session.exec(query):
                self._move(session, entity, event)
            session.commit()

    def close(self) -> None:
        self.store.close()


# -- the command line ------------------------------------------------------------------------

GROUPS: dict[str, tuple[str, ...]] = {
    "apply_memory": ("apply_memory", "apply_memory_batch"),
    "persist_single": ("persist_single",),
    "persist_batch": ("persist_batch", "growth"),
    "memory_per_entity": ("memory_per_entity",),
    "naive": ("naive_orm_single", "naive_orm_batch"),
    "refresh_cycle": ("refresh_cycle_100k", "refresh_growth"),
    "backend_calls": ("backend_calls_per_cycle",),
    "pg_two_workers": ("pg_two_workers",),
    "slurm_calls": ("slurm_calls_per_cycle",),
    "demo": ("demo_wall_seconds",),
}
ORDER = [name for names in GROUPS.values() for name in names]


def run_group(bench: Bench, group: str) -> list[Result]:
    runner: dict[str, Callable[[], list[Result]]] = {
        "apply_memory": bench.apply_memory,
        "persist_single": bench.persist_single,
        "persist_batch": bench.persist_batch,
        "memory_per_entity": bench.memory_per_entity,
        "naive": bench.naive,
        "refresh_cycle": bench.refresh_cycle,
        "backend_calls": bench.backend_calls,
        "pg_two_workers": bench.pg_two_workers,
        "slurm_calls": bench.slurm_calls,
        "demo": bench.demo,
    }
    return runner[group]()


def format_number(value: float, unit: str) -> str:
    if unit.endswith("/s"):
        return f"{value:,.0f} {unit}"
    if unit.startswith("x"):
        return f"{value:.2f}{unit[1:2]}"
    return f"{value:,.1f} {unit}"


def render(results: Sequence[Result]) -> str:
    header = ("benchmark", "value", "anchor", "ratio", "min..max", "target", "result")
    rows = []
    for r in results:
        spread = (
            f"{r.ratio_min:.2f}..{r.ratio_max:.2f}"
            if r.ratio_min is not None and r.ratio_max is not None and r.reps > 1
            else "-"
        )
        verdict = {True: "PASS", False: "FAIL", None: "(ref)"}[r.passed]
        rows.append(
            (
                r.name,
                format_number(r.value, r.unit),
                format_number(r.anchor, r.anchor_unit),
                f"{r.ratio:.3f}",
                spread,
                str(r.target) if r.target else "-",
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {1, 2, 3, 4}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    out.append("")
    out += [f"{r.name}: {r.notes}" for r in results if r.notes]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="FSM engine benchmarks against anchors measured in the same run."
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (not for targets)")
    parser.add_argument(
        "--only", action="append", choices=ORDER, metavar="NAME", help=f"one of {', '.join(ORDER)}"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    parser.add_argument("--batch-size", type=int, default=2000, help="events per Engine.apply")
    parser.add_argument("--check", action="store_true", help="exit 1 if any target is missed")
    parser.add_argument(
        "--pg-url",
        default=PG_URL,
        help="libpq URL of the PostgreSQL for pg_two_workers (a schema is made, then dropped)",
    )
    args = parser.parse_args(argv)

    cfg = Config.small(args.batch_size) if args.quick else Config.full(args.batch_size)
    wanted = list(dict.fromkeys(args.only or ORDER))
    groups = [g for g, names in GROUPS.items() if any(n in wanted for n in names)]
    env = ", ".join(f"{k} {v}" for k, v in env_summary().items())
    print(f"fsm engine benchmarks ({'quick' if cfg.quick else 'full'} run; {env})", flush=True)

    started = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="fsm-bench-") as tmp:
        bench = Bench(cfg, Path(tmp), args.pg_url)
        for group in groups:
            gc.collect()
            began = perf_counter()
            results += [r for r in run_group(bench, group) if r.name in wanted]
            bench.log(f"{group}: {perf_counter() - began:.1f}s")
    results.sort(key=lambda r: ORDER.index(r.name))
    print(render(results))
    for reason in bench.skipped:
        print(f"skipped {reason}")
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    if args.json is not None:
        args.json.write_text(json.dumps({r.name: r.as_json() for r in results}, indent=2) + "\n")
    failed = [r.name for r in results if r.passed is False]
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
