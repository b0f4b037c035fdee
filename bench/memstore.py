"""A `Store` without a database, for the engine's in-memory path (apply_memory)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from fsm import Store
from fsm.lifecycle import Lifecycle
from storage.records import EntityRow, EntityUpdate, RefreshMark, TransitionRow
from storage.store import UnitOfWork


class _MemoryUnitOfWork(UnitOfWork):
    def __init__(self, rows: dict[str, EntityRow]) -> None:  # no connection: nothing to run
        self._rows = rows
        self._lock_rows = False  # one process, no rows to lock: nothing streams either

    def ensure_definition(
        self, name: str, version: str, body: dict[str, Any], now: datetime
    ) -> None:
        return None

    def lock_entities(self, ids: Any) -> dict[str, EntityRow]:
        rows = self._rows
        return {i: rows[i] for i in dict.fromkeys(ids) if i in rows}

    def write(
        self,
        updates: Sequence[EntityUpdate],
        transitions: Sequence[TransitionRow],
        marks: Mapping[str, RefreshMark] | None = None,  # the in-memory path does no refreshes
    ) -> None:
        rows = self._rows
        for u in updates:
            rows[u.id] = rows[u.id]._replace(
                state=u.state,
                terminal=u.terminal,
                version=u.version,
                seq=u.seq,
                state_entered_at=u.state_entered_at,
                deadline_at=u.deadline_at,
                next_refresh_at=u.next_refresh_at,
                updated_at=u.updated_at,
                definition_version=u.definition_version,
                data=u.data if u.data is not None else rows[u.id].data,
            )


class MemoryStore(Store):
    """A `Store` that keeps entity heads in a dict and drops transitions: no database at all."""

    def __init__(self) -> None:  # deliberately no engine
        self.url = "memory://"
        self.dialect = "memory"
        self.rows: dict[str, EntityRow] = {}

    def close(self) -> None:
        return None

    def ensure_definition(
        self, name: str, version: str, body: dict[str, Any], now: datetime
    ) -> None:
        return None

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        yield _MemoryUnitOfWork(self.rows)


def fresh_row(entity_id: str, lifecycle: Lifecycle, now: datetime) -> EntityRow:
    """An entity as `Engine.create_many` makes it (no data, no deadline in the initial state)."""
    return EntityRow(
        id=entity_id,
        lifecycle=lifecycle.name,
        definition_version=lifecycle.version,
        state=lifecycle.initial,
        terminal=lifecycle.is_terminal(lifecycle.initial),
        version=1,
        seq=0,
        state_entered_at=now,
        deadline_at=None,
        next_refresh_at=now,
        created_at=now,
        updated_at=now,
        data={},
    )
