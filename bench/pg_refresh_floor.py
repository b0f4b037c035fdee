"""(e) on PostgreSQL: the worker's refresh statements alone, run by psycopg with every parameter
computed beforehand: the raw floor of pg_refresh_floor ("the claim → observe → apply cycle
within 1.5x of its raw psycopg floor")."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from benchlib import CYCLE_AT, SimPlan, alternate, sim_clock
from rawfsm import Rules
from refresh_floor import TickedLane, planned_writes
from refresh_runs import PgRefresh
from suite import Suite

from fsm.lifecycle import Lifecycle
from storage.claims import _CLAIM_SETTINGS, locking_claim
from storage.hotsql import ENTITY_COLUMNS, HotSql
from storage.queue import _FINISH_SET, _RELOCK
from storage.records import RefreshMark


class PgRefreshFloor(TickedLane):
    """Per batch, as the worker runs them on PostgreSQL: the claim transaction (the plan
    settings, then one UPDATE .. FROM (SELECT .. FOR UPDATE SKIP LOCKED) RETURNING the rows,
    commit) and the write transaction (the narrow re-read that locks the rows in id order,
    executemany of the changed heads with their marks, of the transitions, one unnest UPDATE
    of the other rows' marks, commit). No observe call, nothing decided or converted."""

    def __init__(
        self,
        pg_url: str,
        schema: str,
        plan: SimPlan,
        lifecycle: Lifecycle,
        rules: Rules,
        now: datetime,
        batch: int,
        tick: int,
    ) -> None:
        self.conn = psycopg.connect(pg_url)
        self.conn.execute(f'SET search_path TO "{schema}"')
        self.conn.execute("SET TIME ZONE 'UTC'")  # as the engine's sessions (storage.database)
        self.conn.commit()
        self.hot = hot = HotSql("postgresql")
        self.batch, self.tick = batch, tick
        self.now, self.lease_until = now, now + timedelta(seconds=30)
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(ENTITY_COLUMNS)} FROM entity")
            stored = {v[0]: v for v in cur.fetchall()}
        self.conn.commit()
        self.writes = planned_writes(hot, stored, plan, lifecycle, rules, now, self.OWNER)
        pick = (
            "FROM entity WHERE next_refresh_at <= %s AND (lease_expires_at IS NULL OR "
            f"lease_expires_at <= %s) AND lifecycle IN (%s) ORDER BY next_refresh_at LIMIT {batch}"
        )
        self.claim = locking_claim(pick)  # the worker's own statement
        self.claimed = 0

    def _batch(self) -> bool:
        conn = self.conn
        with conn.cursor() as cur:
            cur.execute(_CLAIM_SETTINGS)
            cur.execute(self.claim, (self.OWNER, self.lease_until, self.now, self.now, "service"))
            ids = sorted(v[0] for v in cur.fetchall())
        conn.commit()
        if not ids:
            return False
        with conn.cursor() as cur:
            cur.execute(_RELOCK, (ids,))
            cur.fetchall()
            writes = [self.writes[i] for i in ids]
            heads: dict[str, list[tuple[Any, ...]]] = {}  # the store's grouping by statement
            marks: list[RefreshMark] = []
            for sql, _moves, params in writes:
                if sql is None:
                    marks.append(params)
                else:
                    heads.setdefault(sql, []).append(params)
            for sql, rows in heads.items():
                cur.executemany(sql, rows)
            cur.executemany(self.hot.insert_transition, [m for w in writes for m in w[1]])
            if marks:
                cur.execute(
                    _FINISH_SET,
                    (
                        [m.id for m in marks],
                        [m.next_refresh_at for m in marks],
                        [m.observation_failures for m in marks],
                        [m.observed_at for m in marks],
                        self.OWNER,
                    ),
                )
        conn.commit()
        self.claimed += len(ids)
        return True

    def close(self) -> None:
        self.conn.close()


def pg_floor_pass(
    bench: Suite,
    pg: PgRefresh,
    plan: SimPlan,
    lifecycle: Lifecycle,
    rules: Rules,
    batch: int,
    tick: int,
    reps: int,
) -> tuple[list[float], list[float]]:
    """pg_refresh_floor's repetitions: the engine's PostgreSQL cycle on `pg` and the floor on a
    second schema of the same rows, interleaved call by call with each other only. Returns
    (engine seconds, floor seconds) per repetition."""
    count = len(plan.ids)
    second = PgRefresh.open(bench, count)
    engine_s: list[float] = []
    floor_s: list[float] = []
    try:
        for _rep in range(reps):
            run = pg.run(batch, tick)
            second.restore()
            floor = PgRefreshFloor(
                bench.pg_url,
                second.schema,
                plan,
                lifecycle,
                rules,
                sim_clock(CYCLE_AT)(),
                batch,
                tick,
            )
            t_engine, t_floor = alternate(-(-count // (batch * tick)), [run.lane, floor.lane])
            run.finish(plan, None)
            floor.close()
            if floor.claimed != count:
                raise RuntimeError(f"the PostgreSQL floor claimed {floor.claimed} of {count}")
            engine_s.append(t_engine)
            floor_s.append(t_floor)
    finally:
        second.close()
    return engine_s, floor_s
