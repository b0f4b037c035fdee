"""Heavy faults at default settings: every final state equals the simulator's ground truth.

40 % of looks fail (timeouts, errors, garbage, throttling) and 5 % of whole backend calls; the
worker runs with `WorkerSettings()` and the engine's own refresh intervals, on a manual clock.
Its backoff jitter is seeded and its batch sizing reads a fake timer: which looks fail depends on
when each entity is looked at, so with the wall clock in the loop a loaded machine ran another
schedule, whose slowest entity could still be backing off at the cut-off (seen once in CI).
"""

from __future__ import annotations

from collections import Counter

import pytest

from backends.sim import SimBackend, populate
from fsm import Engine, ManualClock
from tests.sizing_support import seeded_worker


@pytest.mark.parametrize("seed", [8, 21])
def test_heavy_faults_leave_no_entity_in_a_wrong_final_state(
    sqlite_url: str, clock: ManualClock, seed: int
) -> None:
    engine = Engine(sqlite_url, clock=clock)
    sim = SimBackend(seed=seed, fault_rate=0.4, batch_fault_rate=0.05)
    populate(engine, sim, services=1000, hosts=20, operations=100, stop_every=17)
    worker = seeded_worker(engine, [sim], seed)  # default WorkerSettings
    failures: Counter[str] = Counter()
    for _ in range(4000):
        failures.update(worker.tick().failures)
        if worker.open_work() == 0:
            break
        clock.advance(0.5)
    assert worker.open_work() == 0
    entities = engine.list_entities()
    assert len(entities) >= 1000
    truth = SimBackend(seed=seed)
    wrong = [(e.id, e.state, truth.expected_final_state(e)) for e in entities]
    wrong = [w for w in wrong if w[1] != w[2]]
    assert wrong == []
    assert sum(failures.values()) > 1000 and len(failures) >= 4  # the faults were real
    finals = Counter(e.state for e in entities)
    assert {"FAILED", "TIMEOUT", "STOPPED", "DEPROVISIONED", "SUCCEEDED"} <= set(finals)
    assert engine.verify() == []
    engine.close()
