"""The worker's refresh cycle: refresh_cycle_100k, its growth and floor, PostgreSQL against
SQLite, backend calls."""

from __future__ import annotations

import gc
import statistics
from functools import partial
from pathlib import Path
from time import perf_counter

from benchlib import (
    CLAIM_BATCH,
    CYCLE_AT,
    SERVICE,
    SIM_ORIGIN,
    SimPlan,
    alternate,
    build_sim_template,
    copy_database,
    sim_clock,
    sim_plan,
    sliced,
    spread_slots,
    sqlite_url,
)
from memstore import MemoryStore
from pg_refresh_floor import pg_floor_pass
from rawfsm import Rules, raw_machine, replay
from refresh_floor import RefreshFloor
from refresh_growth import growth_results
from refresh_parts import RefreshParts, ceiling_result
from refresh_runs import PgRefresh, RefreshRun, SmallCycles
from results import Result, Target, rate_pair
from suite import Suite

from backends.sim import SimBackend, populate
from fsm import (
    Engine,
    ManualClock,
    Worker,
    WorkerSettings,
)


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
        small_floor_s: list[float] = []
        observe_s: list[float] = []
        decide_s: list[float] = []
        pg_s: list[float] = []
        moved: list[float] = []
        big_run: RefreshRun | None = None
        rules = Rules(lifecycle)
        pg = PgRefresh.open(self, big) if cfg.pg_refresh else None
        parts = RefreshParts(self.sim_template(big)[0], sim_clock(CYCLE_AT)(), per_call)

        for _rep in range(cfg.refresh_reps):
            big_path, _ = self.fresh_sim_copy(big)
            floor_path, _ = self.fresh_sim_copy(big)
            small_paths = [self.fresh_sim_copy(small)[0] for _ in range(cfg.refresh_small_runs)]
            small_floor_paths = [
                self.fresh_sim_copy(small)[0] for _ in range(cfg.refresh_small_runs)
            ]
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
            small_runs = [RefreshRun(sqlite_url(p), batch, cfg.refresh_tick) for p in small_paths]
            smalls = SmallCycles([run.lane for run in small_runs])
            small_floors = [
                RefreshFloor(
                    p, small_plan, lifecycle, rules, sim_clock(CYCLE_AT)(), batch, cfg.refresh_tick
                )
                for p in small_floor_paths
            ]
            floor_smalls = SmallCycles([f.lane for f in small_floors])
            for j, slot in enumerate(slots):
                smalls.plan(slot, j // small_chunks)
                floor_smalls.plan(slot, j // small_chunks)
            pg_run = pg.run(batch, cfg.refresh_tick) if pg is not None else None
            lanes = [
                big_run.lane,
                sliced(big_plan.steps, per_call, partial(replay, model)),
                smalls.lane,
                floor.lane,
                floor_smalls.lane,
                pg_run.lane if pg_run is not None else (lambda _chunk: 0.0),
                parts.observe_lane,
                parts.decide_lane,
            ]
            gc.collect()
            t_big, t_raw, _, t_floor, _, t_pg, t_observe, t_decide = alternate(big_chunks, lanes)
            big_run.finish(big_plan, big_path)
            floor.close()
            if floor.claimed != big:
                raise RuntimeError(f"the refresh floor claimed {floor.claimed} of {big}")
            for run, path in zip(small_runs, small_paths, strict=True):
                run.finish(small_plan, path)
            for small_floor in small_floors:
                small_floor.close()
                if small_floor.claimed != small:
                    raise RuntimeError(f"a small floor claimed {small_floor.claimed} of {small}")
            if pg_run is not None:
                pg_run.finish(big_plan, None)
                pg_s.append(t_pg)
            moved.append(big_run.moved / big)
            for path in (big_path, floor_path, *small_paths, *small_floor_paths):
                self.discard(path)
            big_s.append(t_big)
            raw_s.append(t_raw)
            small_s.append(statistics.median(smalls.seconds))
            floor_s.append(t_floor)
            small_floor_s.append(statistics.median(floor_smalls.seconds))
            observe_s.append(t_observe)
            decide_s.append(t_decide)
        pg_alone_s: list[float] = []
        pg_floor_s: list[float] = []
        if pg is not None:
            pg_alone_s, pg_floor_s = pg_floor_pass(
                self, pg, big_plan, lifecycle, rules, batch, cfg.refresh_tick, cfg.refresh_reps
            )
            pg.close()

        assert big_run is not None
        per_big = statistics.median(big_s) / big * 1e6
        stats = big_run.stats
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
            *growth_results(
                (big, small), (big_s, small_s), (floor_s, small_floor_s), cfg.refresh_small_runs
            ),
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
            ceiling_result(big, big_s, floor_s, observe_s, decide_s, parts.events),
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
            *(
                [
                    Result.from_paired(
                        "pg_refresh_floor",
                        rate_pair(pg_alone_s, pg_floor_s, big),
                        "entities/s",
                        "entities/s",
                        Target(">=", 0.667),  # within 1.5x of the floor
                        f"the PostgreSQL refresh cycle of the same {big:,} services "
                        f"({statistics.median(pg_alone_s) / big * 1e6:.1f} us/entity) vs its raw "
                        f"psycopg floor, in a pass of their own after the SQLite lanes (beside "
                        f"them the second database's server work slowed the SQLite cycle by a "
                        f"quarter): the worker's PostgreSQL statements alone on a second "
                        f"schema of the same rows, parameters computed beforehand (claim "
                        f"settings + claim UPDATE .. RETURNING, commit; narrow re-read FOR NO "
                        f"KEY UPDATE, executemany of the changed heads with their marks and of "
                        f"the transitions, the unnest UPDATE of the other marks, commit), "
                        f"{statistics.median(pg_floor_s) / big * 1e6:.1f} us/entity, "
                        f"interleaved call by call; target: within 1.5x",
                    )
                ]
                if pg_floor_s
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
