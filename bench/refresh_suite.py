"""The worker's refresh cycle: refresh_cycle_100k, its growth and floor, PostgreSQL against
SQLite, backend calls."""

from __future__ import annotations

import gc
import sqlite3
import statistics
from functools import partial
from pathlib import Path
from time import perf_counter

import psycopg
from benchlib import (
    CLAIM_BATCH,
    CYCLE_AT,
    SERVICE,
    SIM_ORIGIN,
    SimPlan,
    alternate,
    build_sim_template,
    copy_database,
    sim_backend,
    sim_clock,
    sim_plan,
    sliced,
    spread_slots,
    sqlite_url,
)
from memstore import MemoryStore
from rawfsm import Rules, raw_machine, replay
from refresh_floor import RefreshFloor
from results import Result, Target, rate_pair
from suite import Suite, drop_schema, pg_reachable, pg_schema

from backends.sim import SimBackend, populate
from fsm import (
    Engine,
    ManualClock,
    TickStats,
    Worker,
    WorkerSettings,
)
from storage.hotsql import ENTITY_COLUMNS


class RefreshSuite(Suite):
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
        batch = CLAIM_BATCH
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
        floor_s: list[float] = []
        pg_s: list[float] = []
        moved: list[float] = []
        big_run: RefreshRun | None = None
        rules = Rules(lifecycle)
        pg = PgRefresh.open(self, big) if cfg.pg_refresh else None

        for _rep in range(cfg.refresh_reps):
            big_path, _ = self.fresh_sim_copy(big)
            floor_path, _ = self.fresh_sim_copy(big)
            small_paths = [self.fresh_sim_copy(small)[0] for _ in range(cfg.refresh_small_runs)]
            big_run = RefreshRun(sqlite_url(big_path), batch, cfg.refresh_tick)  # opening: setup
            floor = RefreshFloor(
                floor_path,
                big_plan,
                lifecycle,
                rules,
                sim_clock(CYCLE_AT)(),
                batch,
                cfg.refresh_tick,
            )
            smalls = SmallCycles(
                [RefreshRun(sqlite_url(p), batch, cfg.refresh_tick) for p in small_paths]
            )
            for j, slot in enumerate(slots):
                smalls.plan(slot, j // small_chunks)
            pg_run = pg.run(batch, cfg.refresh_tick) if pg is not None else None
            lanes = [
                big_run.lane,
                sliced(big_plan.steps, per_call, partial(replay, model)),
                smalls.lane,
                floor.lane,
                pg_run.lane if pg_run is not None else (lambda _chunk: 0.0),
            ]
            gc.collect()
            t_big, t_raw, _, t_floor, t_pg = alternate(big_chunks, lanes)
            big_run.finish(big_plan, big_path)
            floor.close()
            if floor.claimed != big:
                raise RuntimeError(f"the refresh floor claimed {floor.claimed} of {big}")
            for run, path in zip(smalls.runs, small_paths, strict=True):
                run.finish(small_plan, path)
            if pg_run is not None:
                pg_run.finish(big_plan, None)
                pg_s.append(t_pg)
            moved.append(big_run.moved / big)
            for path in (big_path, floor_path, *small_paths):
                self.discard(path)
            big_s.append(t_big)
            raw_s.append(t_raw)
            small_s.append(statistics.median(smalls.seconds))
            floor_s.append(t_floor)
        if pg is not None:
            pg.close()

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
                None,
                f"reference, no target (an in-memory anchor for durable work, as persist_batch; "
                f"refresh_cycle_floor judges the cycle): one refresh cycle of {big:,} sim "
                f"services, all due, on a SQLite file: "
                f"Worker.refresh() calls of {cfg.refresh_tick} batches of {batch} on a fixed "
                f"ManualClock (so one due_by) until nothing is due; {statistics.median(moved):.1%}"
                f" of the services transitioned ({stats.transitions:,} transitions from "
                f"{big_plan.events:,} observed events; {stats.backend_calls:,} observe calls "
                f"for {stats.batches:,} batches); anchor: the same events triggered on one "
                f"plain Machine model in memory (set to each entity's recorded state first), "
                f"interleaved call by call",
            ),
            growth,
            Result.from_paired(
                "refresh_cycle_floor",
                rate_pair(big_s, floor_s, big),
                "entities/s",
                "entities/s",
                Target(">=", 0.75),
                f"the refresh_cycle_100k cycle ({per_big:.1f} us/entity) vs anchor (e): the "
                f"worker's statements alone on a copy of the same database with precomputed "
                f"parameters (per batch of {batch}: claim SELECT + lease UPDATE, commit; "
                f"re-read SELECT, executemany of the changed heads with their next-refresh "
                f"marks, transitions, the other rows' marks, commit; no observe call), "
                f"{statistics.median(floor_s) / big * 1e6:.1f} us/entity, interleaved call "
                f"by call",
            ),
            *(
                [
                    Result.from_paired(
                        "pg_refresh_vs_sqlite",
                        rate_pair(pg_s, big_s, big),
                        "entities/s",
                        "entities/s",
                        Target(">=", 0.5),
                        f"one worker's refresh cycle of the same {big:,} sim services on "
                        f"PostgreSQL (a fresh schema, the rows put back between repetitions, "
                        f"ANALYZEd) vs on SQLite (refresh_cycle_100k), interleaved call by "
                        f"call; {statistics.median(pg_s) / big * 1e6:.1f} vs {per_big:.1f} "
                        f"us/entity",
                    )
                ]
                if pg_s
                else []
            ),
        ]

    # backend_calls_per_cycle ------------------------------------------------------------------

    def backend_calls(self) -> list[Result]:
        count = self.cfg.calls_entities
        batch = CLAIM_BATCH
        path = self.workdir / "backend-calls.db"
        engine = Engine(sqlite_url(path), clock=ManualClock(SIM_ORIGIN))
        try:
            sim = SimBackend(0)
            hosts = operations = count // 20
            populate(
                engine, sim, services=count - hosts - operations, hosts=hosts, operations=operations
            )
            settings = WorkerSettings(batch_size=batch, max_batches_per_tick=1_000_000)
            worker = Worker(engine, [sim], settings=settings)  # one tick, however long
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


class PgRefresh:
    """The sim template on PostgreSQL (the same ids and rows as the SQLite one), put back as it
    was before each repetition: the refresh lane of pg_refresh_vs_sqlite."""

    COLUMNS = [c for c in ENTITY_COLUMNS if c not in ("id", "lifecycle", "created_at", "parent_id")]

    def __init__(self, pg_url: str, schema: str, url: str) -> None:
        self.pg_url, self.schema, self.url = pg_url, schema, url

    @classmethod
    def open(cls, bench: Suite, count: int) -> PgRefresh | None:
        if not pg_reachable(bench, "pg_refresh_vs_sqlite"):
            return None
        schema, url = pg_schema(bench.pg_url)
        started = perf_counter()
        build_sim_template(url, count)
        with psycopg.connect(bench.pg_url, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute("CREATE TABLE entity_saved AS SELECT * FROM entity")
        bench.log(f"setup: {count:,} sim services on PostgreSQL in {perf_counter() - started:.1f}s")
        return cls(bench.pg_url, schema, url)

    def run(self, batch: int, tick: int) -> RefreshRun:
        sets = ", ".join(f"{c} = s.{c}" for c in self.COLUMNS)
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{self.schema}"')
            conn.execute("DELETE FROM transition WHERE seq > 1")
            conn.execute(f"UPDATE entity AS e SET {sets} FROM entity_saved AS s WHERE e.id = s.id")
            conn.execute("VACUUM ANALYZE entity")
            conn.execute("VACUUM ANALYZE transition")
        return RefreshRun(self.url, batch, tick)

    def close(self) -> None:
        drop_schema(self.pg_url, self.schema)


class RefreshRun:
    """A worker on a copy of a sim template, at CYCLE_AT on a fixed clock; one lane chunk is one
    `Worker.refresh()` (at most `tick` batches), timed."""

    def __init__(self, url: str, batch: int, tick: int) -> None:
        self.engine = Engine(url, clock=sim_clock(CYCLE_AT))
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

    def finish(self, plan: SimPlan, path: Path | None) -> None:
        """Check the cycle claimed every entity once and applied what the plan says."""
        leftover = self.worker.refresh()
        query = "SELECT count(DISTINCT entity_id) FROM transition WHERE seq > 1"
        if path is None:
            with self.engine.store.engine.connect() as conn:
                moved = conn.exec_driver_sql(query).scalar_one()
        else:
            with sqlite3.connect(path) as conn:
                (moved,) = conn.execute(query).fetchone()
        self.engine.close()
        stats = self.stats
        entities = len(plan.steps)
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
