"""The peers: the ORM route (per event and batched), pytransitions + SQLAlchemy Core, and
psycopg on PostgreSQL."""

from __future__ import annotations

import gc
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg
from anchors import CorePeer, PgFloor
from benchlib import SERVICE, alternate, each, life_event, sliced, sqlite_url
from persist_suite import fire_one
from rawfsm import Rules
from results import Result, Target, rate_pair
from sqlmodel import Session, col, select
from suite import Suite, drop_schema, pg_reachable, pg_schema, shuffled

from fsm import (
    Engine,
    Event,
    NewEntity,
    Store,
)
from storage.tables import EntityTable, TransitionTable


class PeerSuite(Suite):
    # the naive ORM route, for reference --------------------------------------------------------

    def naive(self) -> list[Result]:
        """The ORM route (one commit per event, and batched) and the peers: the SQLModel ORM
        batched, and pytransitions with one reused model + SQLAlchemy Core, batched."""
        cfg = self.cfg
        results = []
        for name, n, chunk in (
            ("naive_orm_single", cfg.naive_single_n, 1),
            ("naive_orm_batch", cfg.naive_batch_n, 1000),
        ):
            engine_db, engine_ids = self.new_database(n, f"{name}-engine")
            orm_db, orm_ids = self.new_database(n, f"{name}-orm")
            core_db, core_ids = self.new_database(n, f"{name}-core")
            engine = Engine(sqlite_url(engine_db))
            lifecycle = engine.lifecycle(SERVICE)
            orm = NaiveOrm(Store(sqlite_url(orm_db)), Rules(lifecycle))
            core_store = Store(sqlite_url(core_db))
            core = CorePeer(core_store.engine, lifecycle, Rules(lifecycle))
            lane_size = 10 if chunk == 1 else chunk  # ten commits per lane chunk
            orm_s: list[float] = []
            engine_s: list[float] = []
            core_s: list[float] = []
            for rep in range(cfg.naive_reps + 1):  # the first repetition warms up
                event = life_event(rep)
                if chunk == 1:
                    lanes = [
                        sliced(orm_ids, lane_size, partial(orm.one_per_commit, event=event)),
                        sliced(engine_ids, lane_size, each(partial(fire_one, engine, event))),
                    ]
                else:
                    order = shuffled(list(range(n)))
                    events = [Event(engine_ids[k], event) for k in order]
                    pairs = [(core_ids[k], event) for k in order]
                    lanes = [
                        sliced(
                            [orm_ids[k] for k in order],
                            lane_size,
                            partial(orm.batched, event=event),
                        ),
                        sliced(events, lane_size, engine.apply),
                        sliced(pairs, lane_size, core.apply),
                    ]
                gc.collect()
                times = alternate(-(-n // lane_size), lanes)
                if rep:
                    orm_s.append(times[0])
                    engine_s.append(times[1])
                    if chunk != 1:
                        core_s.append(times[2])
            engine.close()
            orm.close()
            core_store.close()
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
            if chunk != 1:
                results.append(
                    Result.from_paired(
                        "orm_peer",
                        rate_pair(engine_s, orm_s, n),
                        "transitions/s",
                        "transitions/s",
                        Target(">=", 8.0),
                        f"peer (c): Engine.apply of {chunk:,} vs the SQLModel ORM route batched "
                        f"({what}), {n:,} entities, random order, interleaved; "
                        "ratio = engine / ORM",
                    )
                )
                results.append(
                    Result.from_paired(
                        "transitions_core_peer",
                        rate_pair(engine_s, core_s, n),
                        "transitions/s",
                        "transitions/s",
                        Target(">=", 2.0),
                        f"peer (c): Engine.apply of {chunk:,} vs pytransitions (one reused "
                        f"model, state set per entity, trigger) + SQLAlchemy Core (SELECT .. IN, "
                        f"executemany UPDATE and INSERT of our rows, one commit per batch), "
                        f"{n:,} entities; ratio = engine / peer",
                    )
                )
        return results

    # pg_batch_raw -----------------------------------------------------------------------------

    def pg_batch(self) -> list[Result]:
        """Engine.apply on PostgreSQL against psycopg executemany of its own statements: two
        sets of entities in one schema, every repetition one event for each, batch by batch."""
        cfg = self.cfg
        if not pg_reachable(self, "pg_batch_raw"):
            return []
        n, size = cfg.pg_batch_n, cfg.batch_size
        schema, url = pg_schema(self.pg_url)
        engine: Engine | None = None
        conn: psycopg.Connection[Any] | None = None
        engine_s: list[float] = []
        floor_s: list[float] = []
        try:
            engine = Engine(url)
            ids = []
            for start in range(0, 2 * n, 5000):
                count = min(5000, 2 * n - start)
                ids += [r.id for r in engine.create_many(NewEntity(SERVICE) for _ in range(count))]
            engine_ids, floor_ids = ids[:n], ids[n:]
            conn = psycopg.connect(self.pg_url, options=f"-csearch_path={schema}")
            conn.execute("ANALYZE entity")
            conn.commit()
            rules = Rules(engine.lifecycle(SERVICE))
            for rep in range(cfg.batch_reps + 1):  # the first repetition warms up
                event = life_event(rep)
                events = shuffled([Event(i, event) for i in engine_ids])
                floor = PgFloor(conn, rules, shuffled([(i, event) for i in floor_ids]), size)
                lanes = [sliced(events, size, engine.apply), floor.lane]
                gc.collect()
                t_engine, t_floor = alternate(-(-n // size), lanes)
                if rep:
                    engine_s.append(t_engine)
                    floor_s.append(t_floor)
        finally:
            if conn is not None:
                conn.close()
            if engine is not None:
                engine.close()
            drop_schema(self.pg_url, schema)
        return [
            Result.from_paired(
                "pg_batch_raw",
                rate_pair(engine_s, floor_s, n),
                "transitions/s",
                "transitions/s",
                Target(">=", 0.9),
                f"PostgreSQL, {n:,} entities per side in one schema, one event each per "
                f"repetition in random order, Engine.apply batches of {size:,} vs anchor (d): "
                f"psycopg executemany of the same statements (SELECT .. = ANY FOR NO KEY UPDATE "
                f"in id order, versioned UPDATE, INSERT; one commit per batch) with precomputed "
                f"parameters, interleaved batch by batch; "
                f"{statistics.median(engine_s) / n * 1e6:.1f} vs "
                f"{statistics.median(floor_s) / n * 1e6:.1f} us/transition",
            )
        ]


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
