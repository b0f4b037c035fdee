"""Issue 8, item 9: on PostgreSQL, batches lock their entities in one global order across chunks,
so concurrent batches over the same entities in opposite orders wait, never deadlock."""

from __future__ import annotations

import threading

import pytest

from fsm import Event, NewEntity, StorageError
from tests.hardening_support import flip_engine

ENTITIES = 1_200  # more than one lock chunk (500)
BATCHES = 10  # per thread


@pytest.mark.postgres
def test_opposite_orders_over_many_chunks_never_deadlock(pg_url: str) -> None:
    engine = flip_engine(pg_url)
    try:
        # ids whose byte order and a linguistic collation disagree (case, punctuation)
        ids = [f"{'Ab'[i % 2]}-{i:05d}{'_.'[i % 3 % 2]}x" for i in range(ENTITIES)]
        engine.create_many([NewEntity("flip", {}, i) for i in ids])
        failures: list[BaseException] = []
        start = threading.Barrier(2)

        def run(order: list[str]) -> None:
            start.wait()
            for _ in range(BATCHES):
                try:
                    result = engine.apply([Event(i, "flip") for i in order])
                    assert not result.errors
                except (StorageError, AssertionError) as exc:
                    failures.append(exc)

        threads = [
            threading.Thread(target=run, args=(ids,)),
            threading.Thread(target=run, args=(ids[::-1],)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert not any(t.is_alive() for t in threads)
        assert not failures, f"{len(failures)} of {2 * BATCHES} batches failed: {failures[0]}"
        assert {e.state for e in engine.list_entities()} == {"ON"}  # flipped an even number
        assert {len(engine.history(i)) for i in (ids[0], ids[-1])} == {2 * BATCHES}
        assert engine.verify() == []
    finally:
        engine.close()
