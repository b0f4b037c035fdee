"""The store: the only code that writes SQL. Engine-agnostic records in, records out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from storage.database import open_engine, redacted, resolve_url, translate, translated
from storage.errors import DuplicateEntity, StorageError, VersionConflict
from storage.records import EntityRow, EntityUpdate, StateCount, TransitionRow
from storage.tables import definition_table, entity_table, transition_table

_LOCK_CHUNK = 500

_ENTITY_COLUMNS = [c.name for c in entity_table.columns]
_TRANSITION_COLUMNS = [c.name for c in transition_table.columns]

_HEAD_VALUES: dict[str, Any] = {
    "state": bindparam("u_state"),
    "terminal": bindparam("u_terminal"),
    "version": bindparam("u_version"),
    "seq": bindparam("u_seq"),
    "state_entered_at": bindparam("u_state_entered_at"),
    "deadline_at": bindparam("u_deadline_at"),
    "next_refresh_at": bindparam("u_next_refresh_at"),
    "updated_at": bindparam("u_updated_at"),
    "definition_version": bindparam("u_definition_version"),
}
_HEAD_WHERE = and_(
    entity_table.c.id == bindparam("u_id"),
    entity_table.c.version == bindparam("u_expected_version"),
)
_UPDATE_HEAD = update(entity_table).where(_HEAD_WHERE).values(**_HEAD_VALUES)
_UPDATE_HEAD_AND_DATA = (
    update(entity_table).where(_HEAD_WHERE).values(**_HEAD_VALUES, data=bindparam("u_data"))
)
_INSERT_TRANSITION = insert(transition_table)
_INSERT_ENTITY = insert(entity_table)


def _entity(row: Row[Any]) -> EntityRow:
    return EntityRow(**row._mapping)


def _transition(row: Row[Any]) -> TransitionRow:
    return TransitionRow(**row._mapping)


def _update_params(u: EntityUpdate) -> dict[str, Any]:
    params = {
        "u_id": u.id,
        "u_expected_version": u.expected_version,
        "u_state": u.state,
        "u_terminal": u.terminal,
        "u_version": u.version,
        "u_seq": u.seq,
        "u_state_entered_at": u.state_entered_at,
        "u_deadline_at": u.deadline_at,
        "u_next_refresh_at": u.next_refresh_at,
        "u_updated_at": u.updated_at,
        "u_definition_version": u.definition_version,
    }
    if u.data is not None:
        params["u_data"] = u.data
    return params


class UnitOfWork:
    """Writes inside one database transaction; see `Store.transaction`."""

    def __init__(self, connection: Connection, *, lock_rows: bool) -> None:
        self._conn = connection
        self._lock_rows = lock_rows

    @property
    def connection(self) -> Connection:
        return self._conn

    def insert_entities(self, rows: Sequence[EntityRow]) -> None:
        if rows:
            self._conn.execute(_INSERT_ENTITY, [asdict(r) for r in rows])

    def lock_entities(self, ids: Iterable[str]) -> dict[str, EntityRow]:
        """Read the given entities and, where the database can, lock them until commit."""
        wanted = list(dict.fromkeys(ids))
        found: dict[str, EntityRow] = {}
        for start in range(0, len(wanted), _LOCK_CHUNK):
            chunk = wanted[start : start + _LOCK_CHUNK]
            query = select(entity_table).where(entity_table.c.id.in_(chunk))
            if self._lock_rows:
                query = query.with_for_update()
            for row in self._conn.execute(query):
                found[row.id] = _entity(row)
        return found

    def write(self, updates: Sequence[EntityUpdate], transitions: Sequence[TransitionRow]) -> None:
        """Move entity heads and append their transitions; all or nothing.

        Every update must still match its expected version, else `VersionConflict`
        and the caller's transaction is rolled back.
        """
        plain = [_update_params(u) for u in updates if u.data is None]
        with_data = [_update_params(u) for u in updates if u.data is not None]
        for statement, params in ((_UPDATE_HEAD, plain), (_UPDATE_HEAD_AND_DATA, with_data)):
            if not params:
                continue
            if len(params) == 1:
                result = self._conn.execute(statement, params[0])
                matched = result.rowcount
            else:
                result = self._conn.execute(statement, params)
                matched = result.rowcount
            if matched != len(params):
                self._raise_conflict(params)
        if transitions:
            self._conn.execute(_INSERT_TRANSITION, [asdict(t) for t in transitions])

    def _raise_conflict(self, params: list[dict[str, Any]]) -> None:
        ids = [p["u_id"] for p in params]
        current = {
            row.id: row.version
            for row in self._conn.execute(
                select(entity_table.c.id, entity_table.c.version).where(entity_table.c.id.in_(ids))
            )
        }
        for p in params:
            actual = current.get(p["u_id"])
            if actual != p["u_version"]:
                raise VersionConflict(p["u_id"], p["u_expected_version"], actual)
        raise StorageError("an update matched fewer rows than expected")


class Store:
    """A database of entities and their transitions, opened from a URL."""

    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        self.engine = open_engine(self.url)
        self.dialect = self.engine.dialect.name

    def __repr__(self) -> str:
        return f"Store({redacted(self.url)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest migration."""
        from storage.migrate import upgrade

        upgrade(self)

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        """One database transaction: committed when the block ends, rolled back if it raises."""
        try:
            with self.engine.begin() as conn:
                yield UnitOfWork(conn, lock_rows=self.dialect != "sqlite")
        except IntegrityError as exc:
            duplicate = _duplicate_id(exc)
            if duplicate is not None:
                raise DuplicateEntity(duplicate) from exc
            raise translate(exc, self.url) from exc
        except SQLAlchemyError as exc:
            raise translate(exc, self.url) from exc

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with translated(self.url), self.engine.connect() as conn:
            yield conn

    # -- reads -------------------------------------------------------------------------------

    def get_entity(self, entity_id: str) -> EntityRow | None:
        with self.reading() as conn:
            row = conn.execute(select(entity_table).where(entity_table.c.id == entity_id)).first()
        return _entity(row) if row is not None else None

    def list_entities(
        self,
        *,
        lifecycle: str | None = None,
        state: str | None = None,
        parent_id: str | None = None,
        limit: int | None = None,
        after_id: str | None = None,
    ) -> list[EntityRow]:
        query = select(entity_table).order_by(entity_table.c.id)
        if lifecycle is not None:
            query = query.where(entity_table.c.lifecycle == lifecycle)
        if state is not None:
            query = query.where(entity_table.c.state == state)
        if parent_id is not None:
            query = query.where(entity_table.c.parent_id == parent_id)
        if after_id is not None:
            query = query.where(entity_table.c.id > after_id)
        if limit is not None:
            query = query.limit(limit)
        with self.reading() as conn:
            return [_entity(row) for row in conn.execute(query)]

    def history(self, entity_id: str) -> list[TransitionRow]:
        query = (
            select(transition_table)
            .where(transition_table.c.entity_id == entity_id)
            .order_by(transition_table.c.seq)
        )
        with self.reading() as conn:
            return [_transition(row) for row in conn.execute(query)]

    def histories(self, entity_ids: Sequence[str]) -> dict[str, list[TransitionRow]]:
        """Histories of many entities in one query, each in sequence order."""
        result: dict[str, list[TransitionRow]] = {i: [] for i in entity_ids}
        if not entity_ids:
            return result
        query = (
            select(transition_table)
            .where(transition_table.c.entity_id.in_(list(entity_ids)))
            .order_by(transition_table.c.entity_id, transition_table.c.seq)
        )
        with self.reading() as conn:
            for row in conn.execute(query):
                result[row.entity_id].append(_transition(row))
        return result

    def count_by_state(self) -> list[StateCount]:
        query = (
            select(entity_table.c.lifecycle, entity_table.c.state, func.count())
            .group_by(entity_table.c.lifecycle, entity_table.c.state)
            .order_by(entity_table.c.lifecycle, entity_table.c.state)
        )
        with self.reading() as conn:
            return [StateCount(lc, st, int(n)) for lc, st, n in conn.execute(query)]

    # -- definitions -------------------------------------------------------------------------

    def ensure_definition(
        self, name: str, version: str, body: dict[str, Any], now: datetime
    ) -> None:
        """Remember a definition version, so history written with it can be replayed later."""
        exists = select(definition_table.c.version).where(
            definition_table.c.name == name, definition_table.c.version == version
        )
        try:
            with self.engine.begin() as conn:
                if conn.execute(exists).first() is None:
                    conn.execute(
                        insert(definition_table),
                        {"name": name, "version": version, "body": body, "created_at": now},
                    )
        except IntegrityError:
            return  # another process stored the same version first: same content by construction
        except SQLAlchemyError as exc:
            raise translate(exc, self.url) from exc

    def definitions(self) -> dict[tuple[str, str], dict[str, Any]]:
        with self.reading() as conn:
            rows = conn.execute(select(definition_table))
            return {(r.name, r.version): dict(r.body) for r in rows}


def _duplicate_id(exc: IntegrityError) -> str | None:
    """The entity id named by a duplicate-key error on the entity table, if that is what it is."""
    params = exc.params
    text = str(exc.orig)
    if "entity.id" not in text and "entity_pkey" not in text:
        return None
    if isinstance(params, dict):
        value = params.get("id")
        return str(value) if value is not None else None
    if isinstance(params, (list, tuple)) and params and isinstance(params[0], dict):
        return str(params[0].get("id"))
    return "?"
