"""The engine: applies events to entities and persists every transition atomically.

For each event the compiled lifecycle picks the destination; the new head of the entity
(state, version + 1, state_entered_at, deadline) and the transition row are written in one
database transaction, only if the entity is still at the version that was read.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fsm import validation
from fsm.clock import Clock, utc_now
from fsm.context import EventContext
from fsm.definition import MAX_SECONDS
from fsm.errors import CallbackError, InvalidEvent, InvalidInput, UnknownLifecycle
from fsm.events import BatchResult, Event, GuardsHeld, NewEntity, Outcome
from fsm.lifecycle import CompiledTransition, HookFailed, Lifecycle
from fsm.lifecycles import builtin_lifecycles
from fsm.reading import EngineReads
from fsm.redaction import redact
from fsm.staging import Head, StagedBatch, check_data, check_event
from storage import (
    DatabaseFull,
    EntityRow,
    Store,
    TransitionRow,
    UnitOfWork,
    VersionConflict,
)

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 30.0
MAX_REFRESH_SCALE = 1e6
TransitionListener = Callable[[Sequence[TransitionRow]], None]
T = TypeVar("T")


def _once_more_if_full(write: Callable[[], T]) -> T:
    """Run a self-contained write; after `DatabaseFull` the store has given the write-ahead
    log's space back, so one more attempt usually fits (nothing of the first was kept)."""
    try:
        return write()
    except DatabaseFull:
        return write()


class Engine(EngineReads):
    """Lifecycles + a store. Create entities, fire events, read state and history, verify."""

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        lifecycles: Iterable[Lifecycle] = (),
        clock: Clock = utc_now,
        default_refresh: float = DEFAULT_REFRESH_SECONDS,
        refresh_scale: float = 1.0,
        migrate: bool = True,
    ) -> None:
        validation.seconds(default_refresh, "default_refresh", positive=True)
        validation.finite_number(refresh_scale, "refresh_scale", above=0, maximum=MAX_REFRESH_SCALE)
        self.store = store if isinstance(store, Store) else Store(store)
        if migrate:
            self.store.migrate()
        self.clock = clock
        self.default_refresh = timedelta(seconds=default_refresh)
        self.refresh_scale = refresh_scale
        self.lifecycles: dict[str, Lifecycle] = builtin_lifecycles()
        for lifecycle in lifecycles:
            self.register(lifecycle)
        self._listeners: list[TransitionListener] = []
        self._stored_versions: set[tuple[str, str]] = set()

    @classmethod
    def open_existing(cls, db: str | None = None, **options: Any) -> Engine:
        """An engine on an existing fsm database: nothing is created, migrated, written or
        locked to open it (for readers such as `fsm status`, `fsm watch`)."""
        store = Store.open_existing(db)
        try:
            return cls(store, migrate=False, **options)
        except BaseException:
            store.close()
            raise

    # -- configuration -----------------------------------------------------------------------

    def register(self, lifecycle: Lifecycle) -> None:
        """Add (or replace) a lifecycle; entities keep their history under the old version."""
        if not isinstance(lifecycle, Lifecycle):
            raise InvalidInput("lifecycle", f"must be a Lifecycle, not {type(lifecycle).__name__}")
        self.lifecycles[lifecycle.name] = lifecycle

    def lifecycle(self, name: str) -> Lifecycle:
        try:
            return self.lifecycles[name]
        except (KeyError, TypeError):  # TypeError: not even hashable
            raise UnknownLifecycle(str(name), sorted(self.lifecycles)) from None

    def now(self) -> datetime:
        """The engine's clock, checked: a naive or absurd time would corrupt every deadline."""
        return validation.aware_time(self.clock(), "clock()")

    def subscribe(self, listener: TransitionListener) -> None:
        """Call `listener` with the transitions of every committed write (errors are logged)."""
        self._listeners.append(listener)

    def close(self) -> None:
        self.store.close()

    def _store_definitions(self, uow: UnitOfWork, used: Iterable[Lifecycle], now: datetime) -> None:
        """Record, in the caller's transaction, the definition versions its rows name."""
        for lifecycle in used:
            key = (lifecycle.name, lifecycle.version)
            if key not in self._stored_versions:
                body = lifecycle.definition.to_dict()
                uow.ensure_definition(lifecycle.name, lifecycle.version, body, now)

    # -- creating ----------------------------------------------------------------------------

    def create(
        self,
        lifecycle: str,
        data: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        parent_id: str | None = None,
        profile: str | None = None,
    ) -> EntityRow:
        """Create one entity in its lifecycle's initial state (driven by backend `profile`,
        or by its lifecycle's default backend)."""
        return self.create_many(
            [NewEntity(lifecycle, {} if data is None else data, id, parent_id, profile)]
        )[0]

    def create_many(self, items: Iterable[NewEntity]) -> list[EntityRow]:
        """Create entities in one transaction: all of them, or (on any error) none."""
        now = self.now()
        rows, used = self._new_rows(items, now)

        def write() -> None:
            with self.store.transaction() as uow:
                self._store_definitions(uow, used.values(), now)
                uow.insert_entities(rows)

        _once_more_if_full(write)
        self._stored_versions.update((lc.name, lc.version) for lc in used.values())
        return rows

    def create_in(self, uow: UnitOfWork, items: Iterable[NewEntity]) -> list[EntityRow]:
        """Create entities inside a caller's open transaction, validated as `create_many` does.

        For runtimes whose transition must bring its children into being atomically (a host
        command and its operation, a supervisor and its next attempt): both commit or neither.
        """
        now = self.now()
        rows, used = self._new_rows(items, now)
        self._store_definitions(uow, used.values(), now)
        uow.insert_entities(rows)
        return rows

    def _new_rows(
        self, items: Iterable[NewEntity], now: datetime
    ) -> tuple[list[EntityRow], dict[str, Lifecycle]]:
        rows: list[EntityRow] = []
        used: dict[str, Lifecycle] = {}
        if not isinstance(items, Iterable) or isinstance(items, (str, bytes, Mapping)):
            raise InvalidInput("items", f"must be a list of NewEntity, not {type(items).__name__}")
        for item in items:
            if not isinstance(item, NewEntity):
                raise InvalidInput("item", f"must be an fsm.NewEntity, not {type(item).__name__}")
            lifecycle = used[item.lifecycle] = self.lifecycle(item.lifecycle)
            data = check_data({} if item.data is None else item.data, "entity data")
            entity_id = item.id if item.id is not None else uuid.uuid4().hex
            validation.text(entity_id, "entity id")
            validation.optional_text(item.parent_id, "parent_id")
            validation.profile_name(item.profile)
            state = lifecycle.initial
            rows.append(
                EntityRow(
                    id=entity_id,
                    lifecycle=lifecycle.name,
                    definition_version=lifecycle.version,
                    state=state,
                    terminal=lifecycle.is_terminal(state),
                    version=1,
                    seq=0,
                    state_entered_at=now,
                    deadline_at=self._deadline(lifecycle, state, now, data),
                    next_refresh_at=now,
                    created_at=now,
                    updated_at=now,
                    data=data,
                    parent_id=item.parent_id,
                    profile=item.profile,
                )
            )
        return rows, used

    # -- applying events ---------------------------------------------------------------------

    def fire(
        self,
        entity_id: str,
        event: str,
        payload: Mapping[str, Any] | None = None,
        *,
        source: str = "user",
        observed_at: datetime | None = None,
        expected_version: int | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """Apply one event and commit. Raises the typed error instead of returning it."""
        outcome = self.apply(
            [Event(entity_id, event, payload, source, observed_at, expected_version, data)]
        ).outcomes[0]
        if outcome.error is not None:
            raise outcome.error
        return outcome

    def apply(self, events: Sequence[Event]) -> BatchResult:
        """Apply many events in one transaction, isolating failures per event.

        An event that is invalid, conflicts, or whose guard or callback raises is reported in
        its outcome and leaves its entity as the previous events left it; the others commit.
        A database failure raises and commits nothing.
        """
        if not isinstance(events, Sequence) or isinstance(events, (str, bytes)):
            raise InvalidInput("events", f"must be a list of Event, not {type(events).__name__}")
        if not events:
            return BatchResult(())
        checked: list[Event | None] = []
        refused: dict[int, InvalidInput] = {}
        for i, event in enumerate(events):
            try:
                checked.append(check_event(event))
            except InvalidInput as exc:
                checked.append(None)
                refused[i] = exc
        ids = [c.entity_id for c in checked if c is not None]

        def write() -> tuple[StagedBatch, tuple[Outcome, ...]]:
            with self.store.transaction() as uow:
                batch = self.stage(uow, uow.lock_entities(ids))
                outcomes = batch.add_all(events, checked, refused)
                batch.flush()
            return batch, outcomes

        batch, outcomes = _once_more_if_full(write)
        self.committed(batch)
        return BatchResult(outcomes)

    def stage(self, uow: UnitOfWork, rows: Mapping[str, EntityRow]) -> StagedBatch:
        """Start staging events on rows already read (and locked) in `uow`; for runtimes that
        must write their own bookkeeping in the same transaction. Call `flush()` before the
        transaction ends and `committed()` after it commits."""
        return StagedBatch(self, uow, rows, self.now())

    def committed(self, batch: StagedBatch) -> None:
        """Tell the engine a staged batch's transaction committed (caches, listeners)."""
        self._stored_versions.update((lc.name, lc.version) for lc in batch.used)
        if batch.transitions:
            self._publish(batch.transitions)

    def _step(self, head: Head, event: Event, now: datetime) -> TransitionRow | GuardsHeld | None:
        """Decide and stage one checked event on `head`; raise (leaving `head` untouched) if it
        fails."""
        row = head.row
        if event.expected_version is not None and event.expected_version != head.version:
            raise VersionConflict(row.id, event.expected_version, head.version)
        lifecycle = self.lifecycle(row.lifecycle)
        state = head.state
        candidates = lifecycle.pairs.get((state, event.name))  # the one lookup of this event
        if candidates is None:
            raise InvalidEvent(row.id, row.lifecycle, state, event.name, lifecycle.allowed[state])
        payload = event.payload or {}
        observed = event.observed_at or now
        if observed > now:  # nothing is observed after it is recorded: a time from the future
            observed = now  # (a skewed clock, a forged one) must not pass time_limit_exceeded

        first = candidates[0]
        held: GuardsHeld | None = None
        if not first.checks and (not first.callbacks or first.dest == state):
            chosen: CompiledTransition | None = first  # no guard to ask, no callback to run
        else:
            chosen, held = self._decide(lifecycle, candidates, head, event, payload, observed)
        dest = state if chosen is None else chosen.dest

        if event.data and head.merge(event.data) and dest == state:
            head.version += 1
        if dest == state:
            return held
        entered = observed if observed > head.entered_at else head.entered_at
        head.seq += 1
        head.version += 1
        head.state = dest
        head.entered_at = entered
        head.terminal = dest in lifecycle.terminal
        head.deadline_at = self._deadline(lifecycle, dest, entered, head.data)
        head.next_refresh_at = None if head.terminal else self._next_refresh(lifecycle, dest, now)
        head.definition_version = lifecycle.version
        return TransitionRow(  # positional: three times cheaper than keywords, per event
            row.id,
            head.seq,
            state,
            dest,
            event.name,
            event.source,
            redact(payload) if payload else {},
            observed,
            now,
            lifecycle.version,
        )

    @staticmethod
    def _decide(
        lifecycle: Lifecycle,
        candidates: tuple[CompiledTransition, ...],
        head: Head,
        event: Event,
        payload: Mapping[str, Any],
        observed: datetime,
    ) -> tuple[CompiledTransition | None, GuardsHeld | None]:
        """The candidate whose guards hold (or the guards that held the event), its callbacks
        run; apart from `_step` so that an event with neither builds no context."""
        row, state = head.row, head.state

        def context() -> EventContext:
            return EventContext(
                row.id,
                row.lifecycle,
                state,
                head.data,
                head.entered_at,
                head.deadline_at,
                event.name,
                payload,
                observed,
            )

        try:
            chosen = lifecycle.choose_from(candidates, context)
            if chosen is None:  # allowed, but held by its guards: say which
                return None, GuardsHeld(lifecycle.held_by(state, event.name, context()))
            if chosen.callbacks and chosen.dest != state:
                ctx = context()
                for name, callback in chosen.callbacks:
                    try:
                        callback(ctx, chosen.dest)
                    except Exception as exc:
                        raise HookFailed(name, exc) from exc
        except HookFailed as failed:
            raise CallbackError(row.id, event.name, failed.name, failed.cause) from failed.cause
        return chosen, None

    def _deadline(
        self, lifecycle: Lifecycle, state: str, entered: datetime, data: Mapping[str, Any]
    ) -> datetime | None:
        """The state's time limit from `entered`; entity data may change the limit of a state
        that has one (`{"time_limits": {"RUNNING": 300}}`), never give one to a state without
        (it would have no event to fire)."""
        limit = lifecycle.states[state].time_limit
        if limit is None:
            return None
        overrides = data.get("time_limits")
        if isinstance(overrides, Mapping):
            custom = overrides.get(state)
            if (
                isinstance(custom, (int, float))
                and not isinstance(custom, bool)
                and 0 < custom <= MAX_SECONDS
            ):
                limit = float(custom)
        return entered + timedelta(seconds=limit)

    def refresh_interval(self, lifecycle: str, state: str) -> float:
        """Seconds between two observations of an entity in `state` (scaled by refresh_scale)."""
        every = self.lifecycle(lifecycle).states[state].refresh
        base = every if every is not None else self.default_refresh.total_seconds()
        interval = base * self.refresh_scale
        return interval if interval <= MAX_SECONDS else MAX_SECONDS

    def _next_refresh(self, lifecycle: Lifecycle, state: str, now: datetime) -> datetime:
        return now + timedelta(seconds=self.refresh_interval(lifecycle.name, state))

    def _publish(self, transitions: Sequence[TransitionRow]) -> None:
        for listener in self._listeners:
            try:
                listener(transitions)
            except Exception:
                log.exception("transition listener %r failed", listener)
