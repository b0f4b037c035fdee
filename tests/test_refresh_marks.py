"""A refresh ends with the same row whether its entity's head was rewritten or not.

The worker records the end of a look (next refresh time, failures in a row, last success, the
lease dropped) in the head's own UPDATE when the look changed the head, and in the bookkeeping
UPDATE otherwise. Both routes must leave exactly what the look decided, and on PostgreSQL
whether the batch's head writes went out part by part while it was decided or at its end.
"""

from __future__ import annotations

from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from backends.sim import SimBackend, populate
from fsm import Engine, ManualClock
from fsm.observation import FailureKind, Observation
from fsm.worker import REFRESH_PART, Worker, WorkerSettings
from storage import EntityRow
from storage.records import RefreshMark


class Partly(SimBackend):
    """The sim, failing the looks at the entities in `failing` (a timeout)."""

    failing: frozenset[str] = frozenset()

    def observe(self, entities, now):  # type: ignore[no-untyped-def]
        seen = super().observe([e for e in entities if e.id not in self.failing], now)
        down = [e for e in entities if e.id in self.failing]
        return seen + [Observation.failed(e.id, FailureKind.TIMEOUT, "timed out") for e in down]


class Recording(Worker):
    """A worker that keeps the mark each look decided."""

    marks: dict[str, RefreshMark]

    def _record(self, batch, row, observation, started, now, stats):  # type: ignore[no-untyped-def]
        mark = super()._record(batch, row, observation, started, now, stats)
        self.marks[mark.id] = mark
        return mark


def check(before: EntityRow, after: EntityRow, mark: RefreshMark, started: datetime) -> None:
    assert after.next_refresh_at == mark.next_refresh_at
    assert after.observation_failures == mark.observation_failures
    seen = before.last_observed_at if mark.observed_at is None else mark.observed_at
    assert after.last_observed_at == seen
    assert after.lease_owner is None and after.lease_expires_at is None
    if mark.observed_at is not None:
        assert mark.observed_at == started


def test_a_refresh_leaves_what_the_look_decided_on_either_route(
    db_url: str, clock: ManualClock
) -> None:
    engine = Engine(db_url, clock=clock, refresh_scale=0.05)
    sim = Partly(seed=3)
    worker = Recording(engine, [sim], settings=WorkerSettings(batch_size=50))
    routes = {"head": 0, "bookkeeping": 0}
    made = iter(range(10**6))

    @settings(max_examples=25, deadline=None)
    @given(
        st.integers(1, 12) | st.integers(REFRESH_PART + 1, 50),  # PostgreSQL: one part, several
        st.sets(st.integers(0, 49)),
        st.floats(0.1, 30.0),
    )
    def one_batch(services: int, failing: set[int], wait: float) -> None:
        ids = populate(engine, sim, services=services, prefix=f"m{next(made)}")
        sim.failing = frozenset(ids[i] for i in failing if i < len(ids))
        clock.advance(wait)
        before = {e.id: e for e in engine.list_entities()}
        worker.marks = {}
        started = clock()
        stats = worker.refresh_batch()
        assert stats is not None
        for entity_id, mark in worker.marks.items():
            after = engine.get(entity_id)
            check(before[entity_id], after, mark, started)
            routes["head" if after.version != before[entity_id].version else "bookkeeping"] += 1
        assert engine.verify() == []

    one_batch()
    engine.close()
    assert routes["head"] > 0 and routes["bookkeeping"] > 0  # both routes were exercised
