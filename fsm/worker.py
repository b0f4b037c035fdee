"""One worker's ticks: refresh due entities through their backend, fire deadlines, run commands.

The database is the work queue. A refresh claims a batch of due entities with a lease (one short
transaction), observes them with one backend call per backend (no transaction open), then writes
their transitions and next refresh times in one transaction, only for the rows whose lease it
still holds (fencing). Several workers share a PostgreSQL database this way; a dead worker's
leases expire and are taken over.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from fsm import validation
from fsm.engine import Engine
from fsm.errors import FsmError, InvalidEvent, InvalidInput
from fsm.events import Event, Outcome
from fsm.observation import FailureKind, Observation
from fsm.secret_refs import resolve_secrets, storable_arguments
from fsm.supervision import supervise
from storage import EntityRow, StorageError, queue
from storage.records import RefreshMark

log = logging.getLogger(__name__)


class CommandResultLike(Protocol):
    @property
    def data(self) -> Mapping[str, Any] | None: ...

    @property
    def events(self) -> tuple[str, ...] | None: ...

    @property
    def payload(self) -> Mapping[str, Any] | None: ...


class BackendLike(Protocol):
    """What the worker needs of a backend (see `backends.base.Backend`)."""

    name: str
    lifecycles: frozenset[str]
    commands: frozenset[str]
    releases: bool

    def observe_safely(self, entities: Sequence[EntityRow], now: datetime) -> list[Observation]: ...

    def execute(
        self, entity: EntityRow, command: str, arguments: Mapping[str, Any], now: datetime
    ) -> CommandResultLike: ...

    def release(self, entity: EntityRow, now: datetime) -> None: ...


class WorkerListener:
    """Receives what a worker does (Prometheus metrics, a lease audit); override what you need."""

    def observation_failed(self, kind: str) -> None:
        """An observation failed; `kind` is a `FailureKind` value."""

    def lease_taken_over(self, count: int) -> None:
        """`count` expired leases of other workers were taken over."""

    def refresh_done(self, seconds: float, entities: int) -> None:
        """A batch of `entities` was claimed, observed and recorded in `seconds`."""

    def leased(self, worker: str, ids: Sequence[str], at: datetime, until: datetime) -> None:
        """`worker` holds leases on `ids` from `at` until at most `until`."""

    def released(self, worker: str, ids: Sequence[str], at: datetime) -> None:
        """`worker` gave the leases on `ids` back at `at` (their batch committed)."""


class FanOut(WorkerListener):
    """Forwards every notification to several listeners."""

    def __init__(self, listeners: Sequence[WorkerListener]) -> None:
        self.listeners = list(listeners)

    def observation_failed(self, kind: str) -> None:
        for listener in self.listeners:
            listener.observation_failed(kind)

    def lease_taken_over(self, count: int) -> None:
        for listener in self.listeners:
            listener.lease_taken_over(count)

    def refresh_done(self, seconds: float, entities: int) -> None:
        for listener in self.listeners:
            listener.refresh_done(seconds, entities)

    def leased(self, worker: str, ids: Sequence[str], at: datetime, until: datetime) -> None:
        for listener in self.listeners:
            listener.leased(worker, ids, at, until)

    def released(self, worker: str, ids: Sequence[str], at: datetime) -> None:
        for listener in self.listeners:
            listener.released(worker, ids, at)


class LeaseAudit(WorkerListener):
    """Appends every lease taken and given back to a JSON-lines file, so a test (or an operator)
    can check afterwards that no entity was ever held by two live leases."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _write(self, entry: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")

    def leased(self, worker: str, ids: Sequence[str], at: datetime, until: datetime) -> None:
        self._write(
            {
                "worker": worker,
                "leased": list(ids),
                "at": at.isoformat(),
                "until": until.isoformat(),
            }
        )

    def released(self, worker: str, ids: Sequence[str], at: datetime) -> None:
        self._write({"worker": worker, "released": list(ids), "at": at.isoformat()})


@dataclass(frozen=True)
class WorkerSettings:
    batch_size: int = 100
    lease_seconds: float = 30.0
    max_backoff: float = 300.0
    max_batches_per_tick: int = 50
    command_batch: int = 50

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_batches_per_tick < 1 or self.command_batch < 1:
            raise FsmError("batch sizes must be at least 1")
        if self.lease_seconds <= 0 or self.max_backoff <= 0:
            raise FsmError("lease_seconds and max_backoff must be positive")


@dataclass
class TickStats:
    """What one tick did; summed over batches."""

    claimed: int = 0
    transitions: int = 0
    failed_observations: int = 0
    rejected_events: int = 0
    leases_lost: int = 0
    takeovers: int = 0
    backend_calls: int = 0
    timeouts: int = 0
    commands: int = 0
    batches: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def add(self, other: TickStats) -> None:
        for name in (
            "claimed",
            "transitions",
            "failed_observations",
            "rejected_events",
            "leases_lost",
            "takeovers",
            "backend_calls",
            "timeouts",
            "commands",
            "batches",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for kind, n in other.failures.items():
            self.failures[kind] = self.failures.get(kind, 0) + n


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
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
        self.routes: dict[str, BackendLike] = {}
        for backend in backends:
            for lifecycle in backend.lifecycles:
                engine.lifecycle(lifecycle)  # fail fast on a backend for an unknown lifecycle
                if lifecycle in self.routes:
                    raise FsmError(
                        f"two backends drive {lifecycle!r}: "
                        f"{self.routes[lifecycle].name} and {backend.name}"
                    )
                self.routes[lifecycle] = backend

    # -- refresh -----------------------------------------------------------------------------

    def refresh(self) -> TickStats:
        """Refresh due entities, batch after batch, until none is due (bounded per tick)."""
        total = TickStats()
        due_by = self.engine.clock()  # what falls due during this tick waits for the next one
        for _ in range(self.settings.max_batches_per_tick):
            stats = self.refresh_batch(due_by)
            if stats is None:
                break
            total.add(stats)
        return total

    def refresh_batch(self, due_by: datetime | None = None) -> TickStats | None:
        """Claim, observe and record one batch; None when nothing was due."""
        engine, settings = self.engine, self.settings
        started = engine.clock()
        lease_until = started + timedelta(seconds=settings.lease_seconds)
        with engine.store.transaction() as uow:
            claims = queue.claim_due(
                uow,
                self.id,
                started,
                lease_until,
                settings.batch_size,
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
            rows = uow.lock_entities(c.entity.id for c in claims)
            ours = {i: r for i, r in rows.items() if r.lease_owner == self.id}
            stats.leases_lost = len(claims) - len(ours)
            batch = engine.stage(uow, ours)
            marks = []
            for entity_id, row in ours.items():
                observation = observations[entity_id]
                if observation.failure is not None:
                    marks.append(self._backoff(row, observation, now, stats))
                    continue
                self._apply_observation(batch, observation, now, stats)
                head = batch.head(entity_id)
                assert head is not None
                next_at = (
                    None
                    if head.terminal
                    else now + timedelta(seconds=engine.refresh_interval(row.lifecycle, head.state))
                )
                marks.append(RefreshMark(entity_id, next_at, 0))
            batch.flush()
            queue.finish_refresh(uow, self.id, marks)
        engine.committed(batch)
        self._release_finished(batch.transitions)
        if self.listener:
            self.listener.released(self.id, list(ours), engine.clock())
        stats.transitions = len(batch.transitions)
        if self.listener:
            self.listener.refresh_done((engine.clock() - started).total_seconds(), len(claims))
        return stats

    def _observe(
        self, entities: list[EntityRow], now: datetime, stats: TickStats
    ) -> dict[str, Observation]:
        by_backend: dict[str, list[EntityRow]] = {}
        for entity in entities:
            by_backend.setdefault(entity.lifecycle, []).append(entity)
        grouped: dict[int, tuple[BackendLike, list[EntityRow]]] = {}
        for lifecycle, group in by_backend.items():
            backend = self.routes[lifecycle]
            grouped.setdefault(id(backend), (backend, []))[1].extend(group)
        found: dict[str, Observation] = {}
        for backend, group in grouped.values():
            stats.backend_calls += 1
            for observation in backend.observe_safely(group, now):
                found[observation.entity_id] = observation
        for entity in entities:
            found.setdefault(
                entity.id, Observation.failed(entity.id, FailureKind.MISSING, "not observed")
            )
        return found

    def _apply_observation(
        self, batch: Any, observation: Observation, now: datetime, stats: TickStats
    ) -> None:
        source = self.routes[batch.rows[observation.entity_id].lifecycle].name
        if not observation.events and observation.data:
            try:
                batch.merge_data(observation.entity_id, observation.data)
            except InvalidInput as exc:  # a backend's garbage must not sink the whole batch
                stats.rejected_events += 1
                log.warning("data observed on %s rejected: %s", observation.entity_id, exc)
        last = len(observation.events) - 1
        for i, name in enumerate(observation.events):
            outcome: Outcome = batch.add(
                Event(
                    observation.entity_id,
                    name,
                    observation.payload,
                    source,
                    observation.observed_at or now,
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
    ) -> RefreshMark:
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
        if observation.retry_after is not None:
            delay = max(delay, observation.retry_after)
        log.info(
            "observing %s failed (%s, %d in a row): %s; next try in %.1fs",
            row.id,
            kind,
            failures,
            observation.detail,
            delay,
        )
        return RefreshMark(row.id, now + timedelta(seconds=delay), failures)

    def _refresh_first(self, row: EntityRow, now: datetime) -> bool:
        if row.lifecycle not in self.routes or row.deadline_at is None:
            return False
        if row.next_refresh_at is None or row.next_refresh_at > now or row.lease_owner:
            return False
        grace = max(2 * self.engine.refresh_interval(row.lifecycle, row.state), 5.0)
        return (now - row.deadline_at).total_seconds() < grace

    def _release_finished(self, transitions: Sequence[Any]) -> None:
        """Let backends free what entities that just ended on their own still hold."""
        by_version = {lc.version: lc for lc in self.engine.lifecycles.values()}
        for t in transitions:
            lifecycle = by_version.get(t.definition_version)
            if lifecycle is None or t.to_state not in lifecycle.terminal:
                continue
            backend = self.routes.get(lifecycle.name)
            if backend is None or not backend.releases:
                continue
            try:
                backend.release(self.engine.get(t.entity_id), self.engine.clock())
            except Exception:  # a cleanup failure must not stop the loop
                log.exception("releasing %s failed", t.entity_id)

    # -- deadlines ---------------------------------------------------------------------------

    def fire_timeouts(self, limit: int = 500) -> int:
        """Fire the time-limit event of every entity whose state outlived its limit.

        Entities due for a refresh are left to the refresh first: an observation may show the
        state was left in time (e.g. the service became healthy while this worker was down).
        That grace is bounded (`_refresh_first`), so an entity that is always due — its refresh
        interval shorter than a refresh round trip — still times out.
        """
        engine = self.engine
        now = engine.clock()
        with engine.store.transaction() as uow:
            due = [
                r for r in queue.due_deadlines(uow, now, limit) if not self._refresh_first(r, now)
            ]
            batch = engine.stage(uow, {r.id: r for r in due})
            for row in due:
                event = engine.lifecycle(row.lifecycle).states[row.state].on_time_limit
                if event is None:
                    continue
                deadline = row.deadline_at.isoformat() if row.deadline_at else None
                outcome = batch.add(Event(row.id, event, {"deadline_at": deadline}, "timer", now))
                if outcome.error is not None:
                    log.warning("time limit of %s not applied: %s", row.id, outcome.error)
            batch.flush()
        engine.committed(batch)
        self._release_finished(batch.transitions)
        return len(batch.transitions)

    # -- commands ----------------------------------------------------------------------------

    def schedule(
        self,
        entity_id: str,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        delay: float = 0.0,
        at: datetime | None = None,
    ) -> int:
        """Persist a command to run once at `at` (or after `delay` seconds); returns its id."""
        engine = self.engine
        entity = engine.get(entity_id)
        self._check_command(entity, command)
        stored = storable_arguments(arguments)  # JSON, and no literal secret: it is persisted
        now = engine.now()
        if at is not None:
            due = validation.aware_time(at, "at")
        else:
            due = now + timedelta(seconds=validation.seconds(delay, "delay"))
        with engine.store.transaction() as uow:
            return queue.schedule_command(uow, entity_id, command, stored, due, now)

    def run_commands(self) -> int:
        """Run due scheduled commands; each is recorded exactly once, even across crashes."""
        engine = self.engine
        now = engine.clock()
        until = now + timedelta(seconds=self.settings.lease_seconds)
        with engine.store.transaction() as uow:
            due = queue.claim_commands(uow, self.id, now, until, self.settings.command_batch)
        done = 0
        for command in due:
            try:
                self.command(
                    command.entity_id,
                    command.command,
                    command.arguments,
                    source="schedule",
                    scheduled_id=command.id,
                )
                done += 1
            except (FsmError, StorageError) as exc:
                log.warning(
                    "scheduled %s #%d on %s: %s",
                    command.command,
                    command.id,
                    command.entity_id,
                    exc,
                )
            except Exception as exc:  # a backend failure: the claim expires and it is retried
                log.warning(
                    "scheduled %s #%d on %s failed, will retry: %s",
                    command.command,
                    command.id,
                    command.entity_id,
                    exc,
                )
        return done

    def command(
        self,
        entity_id: str,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        source: str = "user",
        scheduled_id: int | None = None,
    ) -> list[Outcome]:
        """Carry out a command: the backend acts (idempotently), then the engine records it.

        A command the lifecycle does not allow now is refused before the backend is called.
        With `scheduled_id`, marking the command done commits with its transitions: if another
        worker recorded it first, nothing is written (exactly once).
        """
        engine = self.engine
        arguments = validation.json_mapping({} if arguments is None else arguments, "arguments")
        entity = engine.get(entity_id)
        lifecycle = engine.lifecycle(entity.lifecycle)
        is_event = self._check_command(entity, command)
        if is_event and lifecycle.candidates(entity.state, command) is None:
            error = InvalidEvent(
                entity.id, entity.lifecycle, entity.state, command, lifecycle.allowed[entity.state]
            )
            if scheduled_id is not None:
                self._finish_scheduled(scheduled_id, f"refused: {error}")
            raise error
        backend = self.routes.get(entity.lifecycle)
        now = engine.clock()
        data: Mapping[str, Any] | None = None
        events: tuple[str, ...] = (command,)
        payload: Mapping[str, Any] = arguments
        if backend is not None:
            # secret references resolve only here, in memory; the payload keeps the reference
            result = backend.execute(entity, command, resolve_secrets(arguments), now)
            data = result.data
            events = result.events if result.events is not None else events
            payload = {**arguments, **(result.payload or {})}
        with engine.store.transaction() as uow:
            batch = engine.stage(uow, uow.lock_entities([entity_id]))
            if not events and data:
                batch.merge_data(entity_id, data)
            outcomes = [
                batch.add(
                    Event(entity_id, name, payload, source, now, data=data if i == 0 else None)
                )
                for i, name in enumerate(events)
            ]
            batch.flush()
            if scheduled_id is not None:
                text = "; ".join(f"{o.event.name}: {o.error or o.state}" for o in outcomes)
                if not queue.complete_command(uow, scheduled_id, self.id, now, text):
                    raise _AlreadyDone(scheduled_id)
        engine.committed(batch)
        for outcome in outcomes:
            if outcome.error is not None:
                raise outcome.error
        return outcomes

    def _check_command(self, entity: EntityRow, command: str) -> bool:
        """True for a lifecycle event; False for a backend's own command (e.g. `submit`, whose
        result events the backend chooses); anything else is refused."""
        validation.text(command, "command")
        if command in self.engine.lifecycle(entity.lifecycle).definition.triggers:
            return True
        backend = self.routes.get(entity.lifecycle)
        if backend is not None and command in backend.commands:
            return False
        raise FsmError(
            f"{command!r} is neither an event of lifecycle {entity.lifecycle!r} nor a command "
            f"of its backend"
        )

    def _finish_scheduled(self, scheduled_id: int, outcome: str) -> None:
        with self.engine.store.transaction() as uow:
            queue.complete_command(uow, scheduled_id, self.id, self.engine.clock(), outcome)

    # -- lifetime ----------------------------------------------------------------------------

    def tick(self) -> TickStats:
        """Commands first (a due stop wins over a refresh), then refresh, then deadlines, then
        supervision (what just ended is replaced in the same tick)."""
        stats = TickStats()
        stats.commands = self.run_commands()
        stats.add(self.refresh())
        stats.timeouts = self.fire_timeouts()
        supervise(self)
        return stats

    def open_work(self) -> int:
        """Entities not yet terminal plus commands not yet done: zero means idle."""
        with self.engine.store.transaction() as uow:
            return queue.open_work(uow)

    def release(self) -> int:
        """Give back this worker's leases (graceful shutdown)."""
        with self.engine.store.transaction() as uow:
            return queue.release_leases(uow, self.id)


class _AlreadyDone(FsmError):
    def __init__(self, scheduled_id: int) -> None:
        super().__init__(f"scheduled command #{scheduled_id} was recorded by another worker")
