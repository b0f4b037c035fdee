"""The engine's lanes of the refresh benchmarks: a worker's cycle on a SQLite copy or on a
PostgreSQL schema put back between repetitions, and the small cycles of refresh_growth."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter

import psycopg
from benchlib import CYCLE_AT, SimPlan, build_sim_template, sim_backend, sim_clock
from suite import Suite, drop_schema, pg_reachable, pg_schema

from fsm import Engine, TickStats, Worker, WorkerSettings
from storage.hotsql import ENTITY_COLUMNS


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
        self.restore()
        return RefreshRun(self.url, batch, tick)

    def restore(self) -> None:
        """The rows as the template had them, no transition of a cycle left, statistics fresh,
        the dirty pages of all that written out."""
        sets = ", ".join(f"{c} = s.{c}" for c in self.COLUMNS)
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{self.schema}"')
            conn.execute("DELETE FROM transition WHERE seq > 1")
            conn.execute(f"UPDATE entity AS e SET {sets} FROM entity_saved AS s WHERE e.id = s.id")
            conn.execute("VACUUM ANALYZE entity")
            conn.execute("VACUUM ANALYZE transition")
            # the put-back's dirty pages written now, not during the timed cycle (a role
            # without pg_checkpoint: the server writes them when it will)
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                conn.execute("CHECKPOINT")

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
    """The small databases of the refresh growth figures (the engine's cycles, or the floor's),
    their lanes run beside the big cycle at the chunks planned for them, each one's time kept."""

    def __init__(self, lanes: Sequence[Callable[[int], float]]) -> None:
        self.lanes = list(lanes)
        self.seconds = [0.0 for _ in self.lanes]
        self._beside: dict[int, list[int]] = {}

    def plan(self, big_chunk: int, run: int) -> None:
        self._beside.setdefault(big_chunk, []).append(run)

    def lane(self, big_chunk: int) -> float:
        total = 0.0
        for run in self._beside.get(big_chunk, ()):
            took = self.lanes[run](big_chunk)
            self.seconds[run] += took
            total += took
        return total
