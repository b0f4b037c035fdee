"""Issue 8, item 3: an engine used from many threads stays usable; the connections of threads
that ended come back to the pool."""

from __future__ import annotations

import asyncio
import gc
import threading

from fsm import Engine, NewEntity
from tests.hardening_support import flip_engine

THREADS = 1_000
WAVE = 50  # threads alive at once


def _checked_out(engine: Engine) -> int:
    gc.collect()
    pool = engine.store.engine.pool
    return int(pool.checkedout())  # type: ignore[attr-defined]


def test_a_thousand_short_lived_threads_each_fire_once(db_url: str) -> None:
    engine = flip_engine(db_url)
    try:
        ids = [f"e{i:04d}" for i in range(THREADS)]
        engine.create_many([NewEntity("flip", {}, i) for i in ids])
        errors: list[BaseException] = []
        stuck: list[str] = []

        def fire(entity_id: str) -> None:
            try:
                engine.fire(entity_id, "flip", source="thread")
            except BaseException as exc:  # reported below, with the entity
                errors.append(exc)

        for start in range(0, THREADS, WAVE):
            wave = [threading.Thread(target=fire, args=(i,)) for i in ids[start : start + WAVE]]
            for t in wave:
                t.start()
            for t in wave:
                t.join(timeout=60)
                if t.is_alive():
                    stuck.append(t.name)
            assert not stuck, f"threads blocked in wave {start // WAVE}: {stuck[:3]}"
            assert not errors, errors[:3]
        assert _checked_out(engine) <= 1  # at most the main thread's own write connection
        assert {e.state for e in engine.list_entities()} == {"OFF"}
        assert engine.verify() == []
    finally:
        engine.close()


def test_asyncio_to_thread_per_call_like_blackfish(db_url: str) -> None:
    """`asyncio.run(svc.refresh())` once per call: every run has a new executor (new threads)."""
    engine = flip_engine(db_url)
    try:
        e = engine.create("flip")

        async def one_call() -> str:
            outcome = await asyncio.to_thread(engine.fire, e.id, "flip")
            return str(outcome.state)

        states = [asyncio.run(one_call()) for _ in range(60)]
        assert states == ["OFF", "ON"] * 30
        assert _checked_out(engine) <= 1
        assert len(engine.history(e.id)) == 60
    finally:
        engine.close()


def test_a_long_lived_thread_keeps_its_connection_until_it_ends(db_url: str) -> None:
    engine = flip_engine(db_url)
    try:
        e = engine.create("flip")
        ready, finish = threading.Event(), threading.Event()

        def worker() -> None:
            engine.fire(e.id, "flip")
            ready.set()
            finish.wait(30)

        t = threading.Thread(target=worker)
        t.start()
        assert ready.wait(30)
        held = _checked_out(engine)
        finish.set()
        t.join(30)
        assert _checked_out(engine) <= max(held - 1, 1)
        engine.fire(e.id, "flip")  # the engine is still fine for the threads that remain
    finally:
        engine.close()
