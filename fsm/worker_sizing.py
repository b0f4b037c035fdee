"""How many entities a worker claims per batch, and how many batches it runs in one tick.

Fixed defaults (100 entities x 50 batches a tick) capped one worker at 5,000 entities a second
whatever it could do, so a worker with more due fell behind and idled between ticks. Here the
batch size follows the measured time per batch instead: it aims at `TARGET_BATCH_SECONDS`
within `MIN_BATCH`..`MAX_BATCH` (an explicit `batch_size` fixes it), and never plans a batch
longer than a quarter of the lease, so a claim cannot expire while it
is observed. A tick runs batches until nothing is due or `TICK_BUDGET_SECONDS` is spent (or an
explicit `max_batches_per_tick` is reached); a tick that stops with work left says it is
behind, and the runner starts the next one at once instead of waiting for its interval.

Aiming at a time per batch assumes a batch costs in proportion to its size. A backend whose
look is one listing of everything it can see (Azure's list of the subscription's VMs) costs
about the same for 100 entities as for 2,000: at a second per listing the rule above kept 100
forever, and 1,000 due hosts cost ten whole listings a cycle. So a full batch slower than the
target, whose size the rule would not raise, is followed now and then by one twice as big
(`PROBE_EVERY`). If that one took hardly longer (`FLAT_SHARE`), batches grow by `STEP` to the
lease's bound and `MAX_BATCH`; once a bigger batch takes clearly longer, or one costs twice
what a batch as big did, the rule is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fsm.worker_settings import WorkerSettings

MIN_BATCH = 100
MAX_BATCH = 2_000
TARGET_BATCH_SECONDS = 0.25
TICK_BUDGET_SECONDS = 1.0
#: the share of the lease one batch may take at the measured rate
LEASE_SHARE = 0.25
#: the most one batch moves the size, up or down: one odd batch must not swing it far
STEP = 2.0
#: full batches between two probes of whether a slow batch's cost grows with its size
PROBE_EVERY = 16
#: a bigger batch costs "hardly longer" when its extra time is at most this share of what
#: proportional cost would add
FLAT_SHARE = 0.25


def size_limit(rate: float | None, lease_seconds: float, cap: int | None) -> int:
    """The largest batch allowed: the explicit `batch_size` (else `MAX_BATCH`), and no more
    than `rate` entities per second get done in a quarter of the lease (never below one)."""
    limit = MAX_BATCH if cap is None else cap
    lease_bound = None if rate is None else rate * lease_seconds * LEASE_SHARE
    if lease_bound is not None and lease_bound < limit:  # (an instant batch: rate inf)
        limit = max(1, int(lease_bound))
    return limit


def next_size(
    current: int, claimed: int, took: float, *, lease_seconds: float, cap: int | None
) -> int:
    """The next batch size after a batch of `current` that claimed `claimed` in `took` seconds.

    An explicit `batch_size` (`cap`) is the size, lowered only where the lease demands it.
    Otherwise a full batch means more is due: the size moves toward what the measured rate does
    in `TARGET_BATCH_SECONDS`, at most `STEP` times up or down, within `MIN_BATCH`..`MAX_BATCH`.
    A batch that was not full shows no backlog, so the size may shrink (it was slow) but does
    not grow."""
    rate = claimed / took if claimed > 0 and took > 0 else None
    limit = size_limit(rate, lease_seconds, cap)
    if cap is not None:
        return limit
    wanted = float(current) * STEP if rate is None else rate * TARGET_BATCH_SECONDS
    if claimed < current:
        wanted = min(wanted, float(current))
    wanted = min(max(wanted, current / STEP), current * STEP)
    return int(min(max(wanted, min(MIN_BATCH, limit)), limit))


class BatchSizer:
    """The worker's current batch size, learned across ticks, and each tick's budget."""

    def __init__(
        self, settings: WorkerSettings, *, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.cap = settings.batch_size
        self.max_batches = settings.max_batches_per_tick
        self.lease_seconds = settings.lease_seconds
        self.timer = timer
        self.size = MIN_BATCH if self.cap is None else self.cap
        #: learned: a batch costs about the same whatever its size (one listing per look)
        self.flat = False
        self._last_full: tuple[int, float] | None = None
        self._since_probe = PROBE_EVERY

    def measured(self, claimed: int, took: float) -> None:
        size = next_size(self.size, claimed, took, lease_seconds=self.lease_seconds, cap=self.cap)
        if self.cap is not None or claimed <= 0 or took <= 0:
            self.size = size
            return
        limit = size_limit(claimed / took, self.lease_seconds, None)
        if claimed < self.size:  # no backlog: nothing learned about cost
            # a short batch of a flat-cost backend is no slower per call: keep its size
            self.size = max(size, min(self.size, limit)) if self.flat else size
            return
        self._learn(claimed, took)
        self._since_probe += 1
        bigger = min(limit, int(self.size * STEP))
        slow_and_held = size <= self.size < bigger and took > TARGET_BATCH_SECONDS
        if self.flat:
            size = max(size, bigger)
        elif slow_and_held and self._since_probe >= PROBE_EVERY:  # does size cost it time?
            self._since_probe = 0
            size = bigger
        self.size = size

    def _learn(self, claimed: int, took: float) -> None:
        """Compare a full batch with the last full one: flat when a bigger batch took hardly
        longer; not flat once a batch costs twice what one at least as big did."""
        last = self._last_full
        self._last_full = (claimed, took)
        if last is None:
            return
        last_size, last_took = last
        if claimed > last_size:
            proportional_extra = last_took * (claimed / last_size - 1)
            self.flat = took - last_took <= FLAT_SHARE * proportional_extra
        elif took > 2 * last_took:
            self.flat = False

    def tick(self) -> TickBudget:
        return TickBudget(self)


class TickBudget:
    """One tick's batches: `another()` says whether to run one more, `done(...)` records one."""

    def __init__(self, sizer: BatchSizer) -> None:
        self.sizer = sizer
        self.started = sizer.timer()
        self.batches = 0
        self.behind = False

    def another(self) -> bool:
        """False once the explicit batch count is reached, or (without one) once the time
        budget is spent; a tick always runs its first batch."""
        limit = self.sizer.max_batches
        if limit is not None:
            return self.batches < limit
        return self.batches == 0 or self.sizer.timer() - self.started < TICK_BUDGET_SECONDS

    def run(self, batch: Callable[[int], int | None]) -> None:
        """Run batches of the current size until nothing is due or the budget says stop;
        `batch(size)` returns how many it claimed, None when nothing was due."""
        while self.another():
            size = self.sizer.size
            began = self.sizer.timer()
            claimed = batch(size)
            if claimed is None:
                self.behind = False
                return
            self.sizer.measured(claimed, self.sizer.timer() - began)
            self.batches += 1
            self.behind = claimed >= size  # a full batch: more may be due
