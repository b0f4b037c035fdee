"""SIGKILL a real process in the middle of batch commits: the database must stay consistent."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fsm import Engine, Event
from storage.tables import transition_table

WORKER = Path(__file__).with_name("crash_worker.py")
ENTITIES = 3000
BATCH = 1000
KILLS = 6


def _count_transitions(engine: Engine) -> int:
    with engine.store.reading() as conn:
        return int(conn.execute(select(func.count()).select_from(transition_table)).scalar_one())


@pytest.mark.slow
def test_sigkill_during_batch_commits_leaves_a_verifiable_database(db_url: str) -> None:
    engine = Engine(db_url)
    ids = [f"svc-{i:05d}" for i in range(ENTITIES)]
    from fsm import NewEntity

    engine.create_many([NewEntity("service", id=i) for i in ids])
    for event in ("job_running", "ping_ok"):
        engine.apply([Event(i, event) for i in ids])
    rng = random.Random(1234)
    previous = _count_transitions(engine)
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), db_url, str(BATCH)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(WORKER.parent.parent)},
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # one batch committed: the worker is busy writing
        assert first.strip().isdigit(), proc.stderr.read() if proc.stderr else first
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert engine.verify() == []
        now = _count_transitions(engine)
        assert now > previous  # it really was writing when it died
        previous = now
        # every batch is all-or-nothing: entities changed in whole batches of BATCH
        states = [e.state for e in engine.list_entities(lifecycle="service")]
        flipped = sum(1 for s in states if s == "UNHEALTHY")
        assert flipped % BATCH == 0 or (ENTITIES - flipped) % BATCH == 0
    engine.close()
