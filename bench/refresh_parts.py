"""What a refresh cycle must do beyond the refresh floor (e), measured apart: the ceiling of
refresh_cycle_floor.

The floor runs the worker's statements with every parameter computed beforehand: it calls no
backend and decides nothing. No engine can skip either. `RefreshParts` times, for the same
entities as the cycle, the two alone:

- observe: the sim backend's `observe` of the rows as the worker reads them (in memory);
- decide: the engine's own in-memory path for what that look reported, `Engine.stage(...)
  .add` per event on a dict-backed store (check, decide, redact, the transition record and
  the outcome; no read before it, no flush after it), the path `apply_memory` measures at
  about twice the speed of the `transitions` library.

So floor / (floor + observe + decide) is the best refresh_cycle_floor any engine deciding at
this one's in-memory speed could reach; what the cycle costs above the three is its glue
(row conversion, marks, bookkeeping, the backend call's thread).
"""

from __future__ import annotations

import statistics
from datetime import datetime
from pathlib import Path
from time import perf_counter

from benchlib import SERVICE, sim_backend, sqlite_url
from memstore import MemoryStore
from results import Result, rate_pair

from fsm import Engine, Store, TickStats, Worker
from fsm.observation import Observation
from storage.records import EntityRow

_READ_CHUNK = 5000


class RefreshParts:
    """Two lanes over the cycle's entities, `per_call` entities per chunk: the sim's observe,
    and the engine's in-memory decision of what it observed."""

    def __init__(self, path: Path, now: datetime, per_call: int) -> None:
        self.now, self.per_call = now, per_call
        self.sim = sim_backend()
        self.rows: list[EntityRow] = []
        store = Store(sqlite_url(path))
        try:
            ids = self._ids(store)
            for start in range(0, len(ids), _READ_CHUNK):
                with store.transaction() as uow:  # the rows as the worker reads them
                    found = uow.lock_entities(ids[start : start + _READ_CHUNK])
                self.rows.extend(found[i] for i in ids[start : start + _READ_CHUNK])
        finally:
            store.close()
        self.memory = MemoryStore()
        self.memory.rows = {row.id: row for row in self.rows}
        self.engine = Engine(self.memory, migrate=False)
        self.worker = Worker(self.engine, [self.sim])  # routes the looks; never ticks
        self.stats = TickStats()
        self.engine.lifecycle(SERVICE)  # compiled now, not in the first timed chunk
        self.observed: list[Observation] = self.sim.observe(self.rows, now)  # the decide input
        self.events = 0

    @staticmethod
    def _ids(store: Store) -> list[str]:
        from sqlalchemy import text

        with store.reading() as conn:
            return [r[0] for r in conn.execute(text("SELECT id FROM entity ORDER BY id"))]

    def _chunk(self, chunk: int) -> slice:
        return slice(chunk * self.per_call, (chunk + 1) * self.per_call)

    def observe_lane(self, chunk: int) -> float:
        rows = self.rows[self._chunk(chunk)]
        if not rows:
            return 0.0
        started = perf_counter()
        self.sim.observe(rows, self.now)
        return perf_counter() - started

    def decide_lane(self, chunk: int) -> float:
        part = self._chunk(chunk)
        rows, looks = self.rows[part], self.observed[part]
        if not rows:
            return 0.0
        started = perf_counter()
        with self.memory.transaction() as uow:
            staged = self.engine.stage(uow, {row.id: row for row in rows})
            for look in looks:  # the worker's own staging of a look
                self.worker._apply_observation(staged, look, self.now, self.stats)
        took = perf_counter() - started
        self.events += sum(len(look.events) for look in looks)
        return took


def ceiling_result(
    count: int,
    cycle_s: list[float],
    floor_s: list[float],
    observe_s: list[float],
    decide_s: list[float],
    events: int,
) -> Result:
    """refresh_cycle_ceiling: the floor plus what no engine can skip (`refresh_parts`)."""
    needed_s = [f + o + d for f, o, d in zip(floor_s, observe_s, decide_s, strict=True)]

    def per(seconds: list[float]) -> float:
        return statistics.median(seconds) / count * 1e6

    glue = per(cycle_s) - per(needed_s)
    return Result.from_paired(
        "refresh_cycle_ceiling",
        rate_pair(needed_s, floor_s, count),
        "entities/s",
        "entities/s",
        None,
        f"reference, the best refresh_cycle_floor reachable: floor (e) {per(floor_s):.1f} + "
        f"the sim's observe {per(observe_s):.1f} + the engine's in-memory check, decision "
        f"and redaction of what it reported {per(decide_s):.1f} us/entity "
        f"({events / len(decide_s) / count:.2f} events/entity), each timed alone on the "
        f"same entities and interleaved with the cycle; the cycle spends {glue:.1f} "
        f"us/entity above the three (conversions, marks, bookkeeping, the call's thread)",
    )
