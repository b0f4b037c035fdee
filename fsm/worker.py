"""One worker's ticks: refresh due entities through their backend, fire deadlines, run commands,
release what ended entities hold.

The database is the work queue. A refresh claims a batch of due entities with a lease (one short
transaction), observes them with one bounded backend call per backend (no transaction open), then
writes their transitions and next refresh times in one transaction, only for the rows whose lease
it still holds (fencing). Several workers share a PostgreSQL database this way; a dead worker's
leases expire and are taken over. The parts live in `worker_*` modules; this one is the loop.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from fsm import deadline_rule
from fsm.engine import Engine
from fsm.errors import FsmError, InvalidInput
from fsm.events import Event, Outcome
from fsm.observation import FailureKind, Observation
from fsm.staging import StagedBatch
from fsm.supervision import supervise
from fsm.worker_base import log
from fsm.worker_calls import BackendBusy, BoundedCalls, CallTimedOut, PendingCall
from fsm.worker_commands import AlreadyDone, CommandMixin
from fsm.worker_deadlines import DeadlineMixin
from fsm.worker_listeners import FanOut, LeaseAudit, WorkerListener, WorkerStuck
from fsm.worker_releases import ReleaseMixin
from fsm.worker_settings import (
    BackendLike,
    CommandResultLike,
    TickStats,
    WorkerSettings,
    call_timeout,
    default_worker_id,
)
from fsm.worker_sizing import BatchSizer
from storage import EntityRow, queue, releases
from storage.records import RefreshMark

#: heads decided before their writes go out on PostgreSQL: a claim is 100 or more, whose
#: first part (decided while the server waits) should be a small share (claims of 100: 25 and
#: 12 measured alike, 0.71..0.74 of the psycopg refresh floor, against 0.67 without a stream)
REFRESH_PART = 25

__all__ = [
    "AlreadyDone",
    "BackendLike",
    "CommandResultLike",
    "FanOut",
    "LeaseAudit",
    "TickStats",
    "Worker",
    "WorkerListener",
    "WorkerSettings",
    "WorkerStuck",
    "build_routes",
    "default_worker_id",
]


def build_routes(engine: Engine, backends: Iterable[BackendLike]) -> dict[str, BackendLike]:
    """Which backend drives each lifecycle: the one place routes are built (TEAM contract 6
    extends it to per-entity profiles). Refuses a bad backend before anything runs."""
    routes: dict[str, BackendLike] = {}
    for backend in backends:
        for kind in ("observe", "command", "release"):
            call_timeout(backend, kind)  # a bad bound is refused now, not at the first call
        for lifecycle in backend.lifecycles:
            engine.lifecycle(lifecycle)  # fail fast on a backend for an unknown lifecycle
            if lifecycle in routes:
                raise FsmError(
                    f"two backends drive {lifecycle!r}: {routes[lifecycle].name} and {backend.name}"
                )
            routes[lifecycle] = backend
    return routes


class Worker(CommandMixin, DeadlineMixin, ReleaseMixin):
    """Drives entities of the lifecycles its backends serve. Thread-compatible, not thread-safe:
    the runner calls its ticks one at a time."""

    def __init__(
        self,
        engine: Engine,
        backends: Iterable[BackendLike],
        *,
        worker_id: str | None = None,
        settings: WorkerSettings | None = None,
        rng: random.Random | None = None,
        listener: WorkerListener | None = None,
    ) -> None:
        self.engine = engine
        self.id = worker_id or default_worker_id()
        self.settings = settings or WorkerSettings()
        self.rng = rng or random.Random()
        self.listener = listener
        self.calls = BoundedCalls()
        self.routes = build_routes(engine, backends)
        self.sizing = BatchSizer(self.settings)

    # -- refresh -----------------------------------------------------------------------------

    def refresh(self) -> TickStats:
        """Refresh due entities, batch after batch, until none is due or the tick's budget is
        spent (`fsm.worker_sizing`); `behind` says whether some were left due."""
        total = TickStats()
        due_by = self.engine.clock()  # what falls due during this tick waits for the next one

        def batch(size: int) -> int | None:
            stats = self.refresh_batch(due_by, size)
            if stats is None:
                return None
            total.add(stats)
            return stats.claimed

        budget = self.sizing.tick()
        budget.run(batch)
        total.behind = budget.behind
        return total

    def refresh_batch(
        self, due_by: datetime | None = None, size: int | None = None
    ) -> TickStats | None:
        """Claim (up to `size`, default the current batch size), observe and record one batch;
        None when nothing was due."""
        engine, settings = self.engine, self.settings
        started = engine.clock()
        lease_until = started + timedelta(seconds=settings.lease_seconds)
        with engine.store.transaction() as uow:
            claims = queue.claim_due(
                uow,
                self.id,
                started,
                lease_until,
                self.sizing.size if size is None else size,
                sorted(self.routes),
                due_by=due_by,
            )
        if not claims:
            return None
        if self.listener:
            self.listener.leased(self.id, [c.entity.id for c in claims], started, lease_until)
        stats = TickStats(claimed=len(claims), batches=1)
        stats.takeovers = sum(1 for c in claims if c.previous_owner not in (None, self.id))
        if stats.takeovers and self.listener:
            self.listener.lease_taken_over(stats.takeovers)
        observations = self._observe([c.entity for c in claims], started, stats)
        now = engine.clock()
        with engine.store.transaction() as uow:
            ours = queue.reread_claims(uow, self.id, claims)
            stats.leases_lost = len(claims) - len(ours)
            batch = engine.stage(uow, ours)
            marks: dict[str, RefreshMark] = {}
            # on PostgreSQL each part's heads go out while the next part is decided
            with batch.streaming(len(ours), marks, REFRESH_PART) as sender:
                for i, row in ours.items():
                    marks[i] = self._record(batch, row, observations[i], started, now, stats)
                    if sender is not None:
                        sender.step(i)
            written = batch.flush(marks)  # a changed head records its mark in the same write
            self._request_releases(uow, batch.transitions, now)
            queue.finish_refresh(uow, self.id, [m for i, m in marks.items() if i not in written])
            if self.listener:  # before the commit: see WorkerListener.released
                self.listener.released(self.id, list(ours), engine.clock())
        engine.committed(batch)
        stats.transitions = len(batch.transitions)
        if self.listener:
            self.listener.refresh_done((engine.clock() - started).total_seconds(), len(claims))
        return stats

    def _record(
        self,
        batch: StagedBatch,
        row: EntityRow,
        observation: Observation,
        started: datetime,
        now: datetime,
        stats: TickStats,
    ) -> RefreshMark:
        """Stage what one look found, the time limit where the rule allows it, and the next look."""
        failed = observation.failure is not None
        if failed:
            wanted = self._backoff(row, observation, now, stats)
            observed = row.last_observed_at
        else:
            self._apply_observation(batch, observation, now, stats)
            wanted = None
            observed = started  # the truth seen is at least as new as the call's start
        head = batch.head(row.id)
        assert head is not None
        # no time limit (most states): no rule to ask, now or for the next look
        if (
            head.deadline_at is not None
            and not head.terminal
            and deadline_rule.may_fire(
                now=now,
                deadline_at=head.deadline_at,
                state_entered_at=head.entered_at,
                last_observed_at=observed,
                routed=True,
            )
        ):
            outcome = self._fire_limit(batch, row.id, now)
            stats.timeouts += outcome is not None and outcome.transition is not None
        if head.terminal:
            return RefreshMark(row.id, None, 0, None if failed else started)
        interval = self.engine.refresh_interval(row.lifecycle, head.state)
        if wanted is None:
            wanted = now + timedelta(seconds=interval)
        next_at = wanted
        if head.deadline_at is not None:
            next_at = deadline_rule.next_look(
                wanted,
                now=now,
                deadline_at=head.deadline_at,
                state_entered_at=head.entered_at,
                interval=interval,
            )
        wait = self._retry_after(observation)
        if wait is not None:  # the system asked for a pause: it wins over the rule's cadence
            next_at = max(next_at, now + timedelta(seconds=wait))
        failures = row.observation_failures + 1 if failed else 0
        return RefreshMark(row.id, next_at, failures, None if failed else started)

    def _retry_after(self, observation: Observation) -> float | None:
        """A failed look's `Retry-After`, if it is a sane number (a backend's garbage is not)."""
        wait = observation.retry_after
        if observation.failure is None or isinstance(wait, bool):
            return None
        if not isinstance(wait, (int, float)) or not 0 <= wait < float("inf"):
            return None
        return min(float(wait), self.settings.max_backoff)

    def _observe(
        self, entities: list[EntityRow], now: datetime, stats: TickStats
    ) -> dict[str, Observation]:
        """One bounded call per backend, all of them at once: a hung backend is abandoned after
        its `observe_timeout` and its entities count as failed looks; the others proceed."""
        grouped: dict[int, tuple[BackendLike, list[EntityRow]]] = {}
        for entity in entities:
            backend = self.routes[entity.lifecycle]
            grouped.setdefault(id(backend), (backend, []))[1].extend((entity,))
        found: dict[str, Observation] = {}
        pending: list[tuple[BackendLike, list[EntityRow], PendingCall[Any] | str]] = []
        for backend, group in grouped.values():
            stats.backend_calls += 1
            try:
                timeout = call_timeout(backend, "observe")
                call: PendingCall[Any] | str = self.calls.start(
                    backend, "observe", backend.name, timeout, backend.observe_safely, group, now
                )
            except BackendBusy as exc:
                call = str(exc)
            pending.append((backend, group, call))
        for backend, group, call in pending:
            try:
                if isinstance(call, str):
                    raise BackendBusy(call)
                for observation in self.calls.wait(backend, "observe", call):
                    found[observation.entity_id] = observation
            except (CallTimedOut, BackendBusy) as exc:
                log.warning("observing %d entities on %s: %s", len(group), backend.name, exc)
                for entity in group:
                    found[entity.id] = Observation.failed(entity.id, FailureKind.TIMEOUT, str(exc))
            except Exception as exc:  # observe_safely should not raise; a bug must not stop us
                for entity in group:
                    found[entity.id] = Observation.failed(
                        entity.id, FailureKind.ERROR, f"{type(exc).__name__}: {exc}"
                    )
        for entity in entities:
            if entity.id not in found:  # built only when missing: it costs more than the check
                found[entity.id] = Observation.failed(
                    entity.id, FailureKind.MISSING, "not observed"
                )
        return found

    def _apply_observation(
        self, batch: StagedBatch, observation: Observation, now: datetime, stats: TickStats
    ) -> None:
        row = batch.rows[observation.entity_id]
        backend = self.routes[row.lifecycle]
        source_for = getattr(backend, "source_for", None)  # a profile router: the entity's own
        source = source_for(row) if source_for is not None else backend.name
        if not observation.events and observation.data:
            try:
                batch.merge_data(observation.entity_id, observation.data)
            except InvalidInput as exc:  # a backend's garbage must not sink the whole batch
                stats.rejected_events += 1
                log.warning("data observed on %s rejected: %s", observation.entity_id, exc)
        last = len(observation.events) - 1
        seen = observation.observed_at or now
        # a backend's clock must not date a look after it was made: a future time would pass
        # `time_limit_exceeded` before the limit (a naive or odd time is refused by the engine)
        if isinstance(seen, datetime) and seen.utcoffset() is not None and seen > now:
            seen = now
        for i, name in enumerate(observation.events):
            outcome: Outcome = batch.add(
                Event(
                    observation.entity_id,
                    name,
                    observation.payload,
                    source,
                    seen,
                    data=observation.data if i == last else None,
                )
            )
            if outcome.error is not None:
                stats.rejected_events += 1
                log.warning(
                    "observation %s on %s rejected: %s", name, observation.entity_id, outcome.error
                )

    def _backoff(
        self, row: EntityRow, observation: Observation, now: datetime, stats: TickStats
    ) -> datetime:
        """Exponential backoff with jitter, capped; a failed observation changes no state."""
        kind = str(observation.failure)
        stats.failed_observations += 1
        stats.failures[kind] = stats.failures.get(kind, 0) + 1
        if self.listener:
            self.listener.observation_failed(kind)
        failures = row.observation_failures + 1
        base = self.engine.refresh_interval(row.lifecycle, row.state)
        delay = min(self.settings.max_backoff, base * 2 ** min(failures - 1, 30))
        delay *= self.rng.uniform(0.5, 1.0)
        log.info(
            "observing %s failed (%s, %d in a row): %s; next try in %.1fs",
            row.id,
            kind,
            failures,
            observation.detail,
            delay,
        )
        return now + timedelta(seconds=delay)

    # -- lifetime ----------------------------------------------------------------------------

    def tick(self) -> TickStats:
        """Commands first (a due stop wins over a refresh), then refresh, then deadlines, then
        the releases the ends of this tick asked for, then supervision (what ended and was
        released is replaced in the same tick)."""
        stats = TickStats()
        stats.commands = self.run_commands()
        stats.add(self.refresh())
        stats.timeouts += self.fire_timeouts()
        stats.releases = self.run_releases()
        supervise(self)
        return stats

    def open_work(self) -> int:
        """Entities not yet terminal, commands not yet done and releases of the lifecycles this
        worker drives not yet confirmed: zero means idle."""
        drives = sorted(name for name, backend in self.routes.items() if backend.releases)
        with self.engine.store.transaction() as uow:
            return queue.open_work(uow) + releases.open_count(uow, drives)

    def release(self) -> int:
        """Give back this worker's leases (graceful shutdown)."""
        with self.engine.store.transaction() as uow:
            return queue.release_leases(uow, self.id)
