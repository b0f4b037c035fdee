"""The engine: applies events to entities and persists every transition atomically.

For each event the compiled lifecycle picks the destination; the new head of the entity
(state, version + 1, state_entered_at, deadline) and the transition row are written in one
database transaction, only if the entity is still at the version that was read.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import inspect

from fsm.clock import Clock, utc_now
from fsm.context import EventContext
from fsm.definition import MAX_SECONDS
from fsm.errors import CallbackError, FsmError, InvalidEvent, UnknownLifecycle
from fsm.events import BatchResult, Event, NewEntity, Outcome
from fsm.lifecycle import HookFailed, Lifecycle
from fsm.lifecycles import builtin_lifecycles
from fsm.redaction import redact
from fsm.verify import Violation, verify_store
from storage import (
    EntityNotFound,
    EntityRow,
    EntityUpdate,
    StateCount,
    Store,
    TransitionRow,
    UnitOfWork,
    VersionConflict,
)
from storage.database import check_existing, redacted, resolve_url, translated
from storage.errors import DatabaseCorrupt

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 30.0
TransitionListener = Callable[[Sequence[TransitionRow]], None]


class _Head:
    """The working copy of one entity inside a batch; committed to the store at the end."""

    __slots__ = (
        "data",
        "data_changed",
        "deadline_at",
        "definition_version",
        "entered_at",
        "next_refresh_at",
        "row",
        "seq",
        "state",
        "terminal",
        "version",
    )

    def __init__(self, row: EntityRow) -> None:
        self.row = row
        self.state = row.state
        self.version = row.version
        self.seq = row.seq
        self.entered_at = row.state_entered_at
        self.deadline_at = row.deadline_at
        self.next_refresh_at = row.next_refresh_at
        self.terminal = row.terminal
        self.definition_version = row.definition_version
        self.data: dict[str, Any] = row.data
        self.data_changed = False

    def update(self, now: datetime) -> EntityUpdate:
        return EntityUpdate(
            id=self.row.id,
            expected_version=self.row.version,
            state=self.state,
            terminal=self.terminal,
            version=self.version,
            seq=self.seq,
            state_entered_at=self.entered_at,
            deadline_at=self.deadline_at,
            next_refresh_at=self.next_refresh_at,
            updated_at=now,
            definition_version=self.definition_version,
            data=self.data if self.data_changed else None,
        )


def _check_json(value: Mapping[str, Any], what: str) -> None:
    """Refuse what the database could not store, before anything is written."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise FsmError(f"{what} is not JSON-serialisable: {exc}") from exc


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise FsmError(f"{what} must be timezone-aware, got {value!r}")
    return value


class StagedBatch:
    """Events applied in memory to rows locked in one unit of work, written by `flush`."""

    def __init__(
        self, engine: Engine, uow: UnitOfWork, rows: Mapping[str, EntityRow], now: datetime
    ) -> None:
        self.engine = engine
        self.uow = uow
        self.rows = rows
        self.now = now
        self.heads: dict[str, _Head] = {}
        self.transitions: list[TransitionRow] = []
        self.used: set[Lifecycle] = set()

    def head(self, entity_id: str) -> _Head | None:
        head = self.heads.get(entity_id)
        if head is None:
            row = self.rows.get(entity_id)
            if row is None:
                return None
            head = self.heads[entity_id] = _Head(row)
        return head

    def add(self, event: Event) -> Outcome:
        head = self.head(event.entity_id)
        if head is None:
            return Outcome(event, error=EntityNotFound(event.entity_id))
        try:
            transition = self.engine._step(head, event, self.now)
        except (FsmError, VersionConflict) as exc:
            return Outcome(event, head.state, head.version, error=exc)
        if transition is not None:
            self.transitions.append(transition)
        return Outcome(event, head.state, head.version, transition)

    def merge_data(self, entity_id: str, data: Mapping[str, Any]) -> bool:
        """Record data with no event (e.g. a tunnel was closed); True if anything changed."""
        head = self.head(entity_id)
        if head is None:
            raise EntityNotFound(entity_id)
        _check_json(data, "data")
        merged = {**head.data, **data}
        if merged == head.data:
            return False
        head.data = merged
        head.data_changed = True
        head.version += 1
        return True

    def flush(self) -> None:
        """Write every changed head and the staged transitions (still inside the transaction)."""
        heads = self.heads.values()
        changed = [h.update(self.now) for h in heads if h.version != h.row.version]
        self.used = {self.engine.lifecycles[h.row.lifecycle] for h in heads if h.seq != h.row.seq}
        self.engine._store_definitions(self.uow, self.used, self.now)
        self.uow.write(changed, self.transitions)


class Engine:
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
        if refresh_scale <= 0 or default_refresh <= 0:
            raise FsmError("default_refresh and refresh_scale must be positive")
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
        """An engine on an existing fsm database: nothing is created, migrated or written to
        open it (for readers such as `fsm status`, `fsm watch`)."""
        url = resolve_url(db)
        check_existing(url)
        store = Store(url)
        try:
            with translated(url), store.engine.connect() as conn:
                has_schema = inspect(conn).has_table("entity")
            if not has_schema:
                raise DatabaseCorrupt(f"{redacted(url)} is not an fsm database (no entity table)")
            return cls(store, migrate=False, **options)
        except BaseException:
            store.close()
            raise

    # -- configuration -----------------------------------------------------------------------

    def register(self, lifecycle: Lifecycle) -> None:
        """Add (or replace) a lifecycle; entities keep their history under the old version."""
        self.lifecycles[lifecycle.name] = lifecycle

    def lifecycle(self, name: str) -> Lifecycle:
        try:
            return self.lifecycles[name]
        except KeyError:
            raise UnknownLifecycle(name, sorted(self.lifecycles)) from None

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
    ) -> EntityRow:
        """Create one entity in its lifecycle's initial state."""
        return self.create_many([NewEntity(lifecycle, data or {}, id, parent_id)])[0]

    def create_many(self, items: Iterable[NewEntity]) -> list[EntityRow]:
        """Create entities in one transaction: all of them, or (on any error) none."""
        now = self.clock()
        rows: list[EntityRow] = []
        used: dict[str, Lifecycle] = {}
        for item in items:
            lifecycle = used[item.lifecycle] = self.lifecycle(item.lifecycle)
            data = dict(item.data or {})
            _check_json(data, "entity data")
            entity_id = item.id if item.id is not None else uuid.uuid4().hex
            if not isinstance(entity_id, str) or not entity_id or len(entity_id) > 200:
                raise FsmError(
                    f"entity id must be a non-empty string of at most 200 characters, "
                    f"got {entity_id!r}"
                )
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
                )
            )
        with self.store.transaction() as uow:
            self._store_definitions(uow, used.values(), now)
            uow.insert_entities(rows)
        self._stored_versions.update((lc.name, lc.version) for lc in used.values())
        return rows

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
        if not events:
            return BatchResult(())
        with self.store.transaction() as uow:
            batch = self.stage(uow, uow.lock_entities(e.entity_id for e in events))
            outcomes = tuple(batch.add(event) for event in events)
            batch.flush()
        self.committed(batch)
        return BatchResult(outcomes)

    def stage(self, uow: UnitOfWork, rows: Mapping[str, EntityRow]) -> StagedBatch:
        """Start staging events on rows already read (and locked) in `uow`; for runtimes that
        must write their own bookkeeping in the same transaction. Call `flush()` before the
        transaction ends and `committed()` after it commits."""
        return StagedBatch(self, uow, rows, self.clock())

    def committed(self, batch: StagedBatch) -> None:
        """Tell the engine a staged batch's transaction committed (caches, listeners)."""
        self._stored_versions.update((lc.name, lc.version) for lc in batch.used)
        if batch.transitions:
            self._publish(batch.transitions)

    def _step(self, head: _Head, event: Event, now: datetime) -> TransitionRow | None:
        """Decide and stage one event on `head`; raise (leaving `head` untouched) if it fails."""
        row = head.row
        if event.expected_version is not None and event.expected_version != head.version:
            raise VersionConflict(row.id, event.expected_version, head.version)
        lifecycle = self.lifecycle(row.lifecycle)
        state = head.state
        candidates = lifecycle.candidates(state, event.name)
        if candidates is None:
            raise InvalidEvent(row.id, row.lifecycle, state, event.name, lifecycle.allowed[state])
        payload = event.payload or {}
        if payload:
            _check_json(payload, f"payload of {event.name!r}")
        if event.data:
            _check_json(event.data, f"data of {event.name!r}")
        observed = _aware(event.observed_at, "observed_at") if event.observed_at else now

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
            chosen = lifecycle.choose(state, event.name, context)
            dest = state if chosen is None else chosen.dest
            if chosen is not None and chosen.callbacks and dest != state:
                ctx = context()
                for name, callback in chosen.callbacks:
                    try:
                        callback(ctx, dest)
                    except Exception as exc:
                        raise HookFailed(name, exc) from exc
        except HookFailed as failed:
            raise CallbackError(row.id, event.name, failed.name, failed.cause) from failed.cause

        if event.data:
            merged = {**head.data, **event.data}
            if merged != head.data:
                head.data = merged
                head.data_changed = True
                if dest == state:
                    head.version += 1
        if dest == state:
            return None
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
        return base * self.refresh_scale

    def _next_refresh(self, lifecycle: Lifecycle, state: str, now: datetime) -> datetime:
        return now + timedelta(seconds=self.refresh_interval(lifecycle.name, state))

    def _publish(self, transitions: Sequence[TransitionRow]) -> None:
        for listener in self._listeners:
            try:
                listener(transitions)
            except Exception:
                log.exception("transition listener %r failed", listener)

    # -- reading -----------------------------------------------------------------------------

    def get(self, entity_id: str) -> EntityRow:
        row = self.store.get_entity(entity_id)
        if row is None:
            raise EntityNotFound(entity_id)
        return row

    def list_entities(
        self,
        *,
        lifecycle: str | None = None,
        state: str | None = None,
        parent_id: str | None = None,
        limit: int | None = None,
        after_id: str | None = None,
    ) -> list[EntityRow]:
        return self.store.list_entities(
            lifecycle=lifecycle, state=state, parent_id=parent_id, limit=limit, after_id=after_id
        )

    def history(self, entity_id: str) -> list[TransitionRow]:
        """The entity's transitions in order (raises `EntityNotFound` for an unknown id)."""
        self.get(entity_id)
        return self.store.history(entity_id)

    def counts(self) -> list[StateCount]:
        return self.store.count_by_state()

    def state_at(self, entity_id: str, when: datetime) -> str | None:
        """The entity's state at `when` (None before it was created)."""
        _aware(when, "when")
        entity = self.get(entity_id)
        if when < entity.created_at:
            return None
        history = self.store.history(entity_id)
        state = history[0].from_state if history else entity.state
        effective = entity.created_at
        for t in history:
            effective = max(effective, t.observed_at)
            if effective > when:
                break
            state = t.to_state
        return state

    def verify(self) -> list[Violation]:
        """Replay every entity's history through the definition version it names."""
        return verify_store(self.store, self.lifecycles)
