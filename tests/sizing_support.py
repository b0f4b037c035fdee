"""A batch-duration timer for tests: the worker's sizing reads it instead of the wall clock, so
a run on a manual clock is the same run on a busy CI machine as on an idle laptop."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from fsm import Engine
from fsm.worker import Worker, WorkerSettings
from fsm.worker_settings import BackendLike
from fsm.worker_sizing import BatchSizer


class FakeTimer:
    """Each reading is `step` seconds after the previous one."""

    def __init__(self, step: float) -> None:
        self.step, self.now = step, 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def seeded_worker(
    engine: Engine, backends: Sequence[BackendLike], seed: int, **settings: Any
) -> Worker:
    """A worker whose schedule is one on any machine: seeded backoff jitter, and batch sizing
    that reads a fast fake timer (which looks a faulty sim fails depends on when they happen)."""
    worker = Worker(engine, backends, settings=WorkerSettings(**settings), rng=random.Random(seed))
    worker.sizing = BatchSizer(worker.settings, timer=FakeTimer(0.001))
    return worker
