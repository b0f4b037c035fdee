"""What the web view reads, in API models: lock-free reads of an existing database only.

The store is opened like `fsm status` opens it (`Engine.open_existing`: nothing created,
migrated, written or locked). A database whose schema is not the newest is refused: its
columns may not be what the pages expect, and migrating is a writer's job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from alembic.runtime.migration import MigrationContext

from fsm.definition import BUILTIN_GUARDS
from fsm.definition import Definition as DefinitionSpec
from fsm.engine import Engine
from fsm.errors import FsmError
from fsm.lifecycle import Lifecycle
from fsm.verify import check_entity, rule_book
from fsm.web import models
from fsm.web.overlay import overlays, versions_by_lifecycle, window_seconds
from fsm.web.tally import MoveTally
from storage import EntityNotFound, releases
from storage.migrate import head_revision
from storage.pages import (
    EntityQuery,
    Mark,
    children,
    count_matching,
    entity_page,
    entity_row,
    history_rows,
    leases_by_worker,
    scheduled_commands,
    state_attention,
    transitions_after,
)
from storage.records import (
    EntityRow,
    ReleaseRow,
    ScheduledCommandRow,
    StateCount,
    TransitionRow,
)

T = TypeVar("T")
CACHE_SECONDS = 2.0  # the overview's aggregates: at most this old (a page load, not a report)
LAG_GRACE = timedelta(minutes=2)


class SchemaNotNewest(FsmError):
    """The database's schema is older (or newer) than this version of fsm expects."""


def check_schema(engine: Engine) -> None:
    with engine.store.reading() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    newest = head_revision()
    if current != newest:
        raise SchemaNotNewest(
            f"database schema is at revision {current or 'none'}, this fsm needs {newest}: "
            "upgrade it with a writer of this version (e.g. `fsm run`), then serve it"
        )


def drawable(body: dict[str, Any]) -> Lifecycle | None:
    """A stored definition compiled for drawing only (None if it no longer parses)."""

    def never(*_args: object) -> bool:
        return False

    def nothing(*_args: object) -> None:
        return None

    moves = body.get("transitions", []) if isinstance(body, dict) else []
    guards = {g for t in moves for key in ("guards", "unless") for g in t.get(key, [])}
    callbacks = {c for t in moves for c in t.get("after", [])}
    try:
        definition = DefinitionSpec.from_dict(body, known_guards=guards)
        return Lifecycle(
            definition,
            guards=dict.fromkeys(guards - BUILTIN_GUARDS, never),
            callbacks=dict.fromkeys(callbacks, nothing),
        )
    except (FsmError, ValueError, TypeError, AttributeError):
        return None


class Snapshot(NamedTuple):
    entity: EntityRow
    history: list[TransitionRow]
    parent: EntityRow | None
    children: list[EntityRow]
    pending: list[ScheduledCommandRow]
    release: ReleaseRow | None


class Reader:
    """Reads for the pages and the API; thread-safe (every read takes its own connection)."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime] | None = None,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.tally = MoveTally(engine.store, self.clock)
        self._cache: dict[str, tuple[float, object]] = {}
        self._drawable: dict[tuple[str, str], Lifecycle | None] = {}
        self._lock = threading.Lock()

    # -- lifecycles --------------------------------------------------------------------------

    def lifecycles(self) -> dict[str, Lifecycle]:
        """Registered lifecycles, plus one stored definition of any other name (compiled once,
        for drawing: its guards and callbacks are names here, never code)."""
        known = dict(self.engine.lifecycles)
        for (name, version), body in sorted(self.engine.store.definitions().items()):
            if name in known:
                continue
            if (name, version) not in self._drawable:
                self._drawable[(name, version)] = drawable(body)
            found = self._drawable[(name, version)]
            if found is not None:
                known[name] = found
        return known

    def lifecycle_infos(self) -> list[models.LifecycleInfo]:
        versions: dict[str, list[str]] = {}
        for name, version in sorted(self.engine.store.definitions()):
            versions.setdefault(name, []).append(version)
        out = []
        for name, lc in self.lifecycles().items():
            d = lc.definition
            states = [
                models.StateInfo(
                    name=s.name,
                    initial=s.initial,
                    terminal=s.terminal,
                    time_limit=s.time_limit,
                    on_time_limit=s.on_time_limit if s.time_limit is not None else None,
                )
                for s in d.states
            ]
            out.append(
                models.LifecycleInfo(
                    name=name,
                    version=lc.version,
                    initial=lc.initial,
                    states=states,
                    triggers=list(d.triggers),
                    versions=versions.get(name, []),
                )
            )
        return out

    def definition(self, name: str, version: str) -> models.Definition | None:
        body = self.engine.store.definitions().get((name, version))
        if body is None:
            lc = self.engine.lifecycles.get(name)
            if lc is None or lc.version != version:
                return None
            body = lc.definition.to_dict()
        return models.Definition(name=name, version=version, body=body)

    # -- overview ----------------------------------------------------------------------------

    def _cached(self, key: str, build: Callable[[], T]) -> T:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.cache_seconds:
                return hit[1]  # type: ignore[return-value]
        value = build()
        with self._lock:
            self._cache[key] = (time.monotonic(), value)
        return value

    def overview(self, window: str) -> models.Overview:
        seconds = window_seconds(window)  # WindowError for a bad one, before the cache
        return self._cached(f"overview:{window}", lambda: self._overview(window, seconds))

    def _overview(self, window: str, seconds: float | None) -> models.Overview:
        now = self.clock()
        since = None if seconds is None else now - timedelta(seconds=seconds)
        store = self.engine.store
        moves = self.tally.counts(since)
        with store.reading() as conn:
            rows = state_attention(conn, now, now - LAG_GRACE)
            leases = leases_by_worker(conn, now)
            unreleased, _oldest = releases.pending(conn, limit=0)
        counts = [StateCount(r.lifecycle, r.state, r.total) for r in rows]
        needs: dict[str, list[int]] = {}
        for r in rows:
            sums = needs.setdefault(r.lifecycle, [0, 0, 0])
            sums[0] += r.failing_observations
            sums[1] += r.overdue_deadlines
            sums[2] += r.lagging_refreshes
        lifecycles = self.lifecycles()
        found = overlays(counts, moves, versions_by_lifecycle(store, lifecycles), since)
        names = list(lifecycles) + sorted(set(found) - set(lifecycles))
        out = []
        for name in names:
            overlay = found.get(name)
            if overlay is None:
                continue
            failing, overdue, lagging = needs.get(name, [0, 0, 0])
            lc = lifecycles.get(name)
            out.append(
                models.LifecycleOverview(
                    name=name,
                    version=lc.version if lc else "",
                    total=sum(overlay.counts.values()),
                    counts=overlay.counts,
                    moves=[
                        models.Move(event=e, from_state=f, to_state=t, times=n)
                        for (e, f, t), n in sorted(overlay.fired.items())
                    ],
                    failing_observations=failing,
                    overdue_deadlines=overdue,
                    lagging_refreshes=lagging,
                )
            )
        return models.Overview(
            window=window,
            since=since,
            now=now,
            lifecycles=out,
            leases=leases,
            releases_pending=unreleased,
        )

    # -- entities ----------------------------------------------------------------------------

    def entities(self, query: EntityQuery) -> models.EntityPage:
        with self.engine.store.reading() as conn:
            page = entity_page(conn, query)
            if page.next_cursor is None and query.after is None:
                matching, more = len(page.rows), False  # all of them are on this page
            else:
                matching, more = count_matching(conn, query)
        return models.EntityPage(
            entities=[models.Entity.of(r) for r in page.rows],
            next_cursor=page.next_cursor,
            matching=matching,
            more_than=more,
        )

    def snapshot(self, entity_id: str) -> Snapshot:
        """Everything one entity's page shows, read in one snapshot (a transition committed
        meanwhile is in all of it or in none)."""
        with self.engine.store.reading() as conn:
            row = entity_row(conn, entity_id)
            if row is None:
                raise EntityNotFound(entity_id)
            return Snapshot(
                row,
                history_rows(conn, entity_id),
                entity_row(conn, row.parent_id) if row.parent_id else None,
                children(conn, entity_id),
                scheduled_commands(conn, entity_id, pending_only=True),
                releases.for_entity(conn, entity_id),
            )

    def detail(self, shot: Snapshot) -> models.EntityDetail:
        return models.EntityDetail(
            entity=models.Entity.of(shot.entity),
            parent=models.Entity.of(shot.parent) if shot.parent is not None else None,
            children=[models.Entity.of(k) for k in shot.children],
            pending_commands=[models.ScheduledCommand.of(c) for c in shot.pending],
            release=models.Release.of(shot.release) if shot.release is not None else None,
            verification=self._verification(shot),
        )

    def _verification(self, shot: Snapshot) -> models.Verification:
        """Replay the entity's history through the definition versions it names."""
        rules = rule_book(self.engine.store, self.engine.lifecycles)
        found = check_entity(shot.entity, shot.history, rules)
        return models.Verification(
            entity_id=shot.entity.id,
            ok=not found,
            violations=[models.Violation(kind=v.kind, detail=v.detail) for v in found],
        )

    def entity(self, entity_id: str) -> models.EntityDetail:
        return self.detail(self.snapshot(entity_id))

    def history(self, entity_id: str) -> models.History:
        shot = self.snapshot(entity_id)
        return models.History(
            entity=models.Entity.of(shot.entity),
            transitions=[models.Transition.of(t) for t in shot.history],
        )

    def verify(self, entity_id: str) -> models.Verification:
        return self._verification(self.snapshot(entity_id))

    # -- live --------------------------------------------------------------------------------

    def start_mark(self, back: timedelta = timedelta(0)) -> Mark:
        return Mark(self.clock() - back, "", 0)

    def transitions_after(
        self, mark: Mark, query: EntityQuery, limit: int = 500
    ) -> list[tuple[str, TransitionRow]]:
        with self.engine.store.reading() as conn:
            return transitions_after(conn, mark, query, limit)
