"""A batch-duration timer for tests: the worker's sizing reads it instead of the wall clock, so
a run on a manual clock is the same run on a busy CI machine as on an idle laptop."""

from __future__ import annotations


class FakeTimer:
    """Each reading is `step` seconds after the previous one."""

    def __init__(self, step: float) -> None:
        self.step, self.now = step, 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now
