"""Read-only queries for the web view: keyset pages of entities, the overview's counts, moves
fired in a window, an entity's scheduled commands and children, transitions after a cursor.

Every function takes a connection from `Store.reading()` (a snapshot, never the write lock).
Pages are keyset pages: a cursor names the last row shown (sort value and id), so page 10 000
of a million entities costs what page 1 costs; an offset would scan everything before it.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, NamedTuple, get_args

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.sql import Select

from storage.records import EntityRow, ScheduledCommandRow, TransitionRow
from storage.tables import entity_table, scheduled_command_table, transition_table

Sort = Literal["id", "updated_at", "created_at", "state_entered_at"]
SORTS: tuple[Sort, ...] = get_args(Sort)
MAX_PAGE = 500
MAX_SEARCH = 200  # characters of a text search


class InvalidCursor(ValueError):
    """A cursor this query did not hand out (edited, or from another sort order)."""


@dataclass(frozen=True, slots=True)
class EntityQuery:
    """Filters and order of one page of entities; `after` is the previous page's cursor."""

    lifecycle: str | None = None
    state: str | None = None
    profile: str | None = None
    parent_id: str | None = None
    entity_id: str | None = None
    text: str | None = None
    sort: Sort = "id"
    descending: bool = False
    limit: int = 50
    after: str | None = None


class EntityPage(NamedTuple):
    rows: list[EntityRow]
    next_cursor: str | None


def has_profiles() -> bool:
    """Whether this schema has `entity.profile` (added by the operate migration)."""
    return "profile" in entity_table.c


def _profile_column() -> ColumnElement[Any]:
    column: ColumnElement[Any] = entity_table.c["profile"]
    return column


def encode_cursor(query: EntityQuery, row: EntityRow) -> str:
    value = getattr(row, query.sort)
    shown = value.isoformat() if isinstance(value, datetime) else value
    text = json.dumps([query.sort, query.descending, shown, row.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(query: EntityQuery) -> tuple[Any, str] | None:
    """(sort value, id) of the cursor, checked against the query's own order."""
    if query.after is None:
        return None
    try:
        padded = query.after + "=" * (-len(query.after) % 4)
        sort, descending, value, last_id = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("not a cursor this server handed out") from None
    if sort != query.sort or descending != query.descending or not isinstance(last_id, str):
        raise InvalidCursor("the cursor belongs to another sort order")
    if sort == "id":
        if value != last_id:
            raise InvalidCursor("not a cursor this server handed out")
        return value, last_id
    try:
        return datetime.fromisoformat(value), last_id
    except (TypeError, ValueError):
        raise InvalidCursor("not a cursor this server handed out") from None


def like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filtered(
    query: EntityQuery, base: Select[Any], dialect: str, *, in_order: bool = False
) -> Select[Any]:
    """`base` with the query's filters. `in_order`: keep SQLite from answering the filters
    from an index (`x || ''` is the same value, but no index has it), so that it walks the
    index of the sort order and stops after one page, instead of sorting every match: without
    statistics it cannot know that `lifecycle = 'service'` matches nine rows in ten."""
    c = entity_table.c

    def plain(column: ColumnElement[Any]) -> ColumnElement[Any]:
        return column.concat("") if in_order else column

    if query.lifecycle is not None:
        base = base.where(plain(c.lifecycle) == query.lifecycle)
    if query.state is not None:
        base = base.where(plain(c.state) == query.state)
    if query.profile is not None and has_profiles():
        base = base.where(plain(_profile_column()) == query.profile)
    if query.parent_id is not None:
        base = base.where(c.parent_id == query.parent_id)
    if query.entity_id is not None:
        base = base.where(c.id == query.entity_id)
    if query.text:
        pattern = like_pattern(query.text[:MAX_SEARCH])
        text = cast(c.data, String)
        if dialect == "sqlite":  # LIKE ignores ASCII case there; lower() would cost a call
            found = or_(c.id.like(pattern, escape="\\"), text.like(pattern, escape="\\"))
        else:
            found = or_(c.id.ilike(pattern, escape="\\"), text.ilike(pattern, escape="\\"))
        base = base.where(found)
    return base


def entity_page(conn: Connection, query: EntityQuery) -> EntityPage:
    """One page of entities in the query's order, and the cursor of the next page (if any)."""
    c = entity_table.c
    key = c[query.sort]
    dialect = conn.dialect.name
    # SQLite: the sort order's index, unless the (lifecycle, state, id) index serves both
    # filter and order, or a parent's children (few) are asked for
    served = query.sort == "id" and query.lifecycle is not None and query.state is not None
    in_order = dialect == "sqlite" and not served and query.parent_id is None
    statement = _filtered(query, select(entity_table), dialect, in_order=in_order)
    position = decode_cursor(query)
    if position is not None:
        value, last_id = position
        if query.sort == "id":
            statement = statement.where(c.id < last_id if query.descending else c.id > last_id)
        else:
            mark = tuple_(key, c.id)
            after = tuple_(literal(value, key.type), literal(last_id, c.id.type))
            statement = statement.where(mark < after if query.descending else mark > after)
    order = [key.desc(), c.id.desc()] if query.descending else [key, c.id]
    if query.sort == "id":
        order = order[:1]
    limit = max(1, min(query.limit, MAX_PAGE))
    rows = [
        EntityRow(**r._mapping) for r in conn.execute(statement.order_by(*order).limit(limit + 1))
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return EntityPage(rows, encode_cursor(query, rows[-1]) if more and rows else None)


def count_matching(conn: Connection, query: EntityQuery, cap: int = 10_000) -> tuple[int, bool]:
    """How many entities match (counted up to `cap`, and whether there are more)."""
    matching = _filtered(query, select(entity_table.c.id), conn.dialect.name).limit(cap + 1)
    inner = matching.subquery()
    total = int(conn.execute(select(func.count()).select_from(inner)).scalar_one())
    return min(total, cap), total > cap


# -- the overview ----------------------------------------------------------------------------


class StateAttention(NamedTuple):
    """Per lifecycle and state: how many entities, and what needs an operator's eye now."""

    lifecycle: str
    state: str
    total: int
    failing_observations: int
    overdue_deadlines: int
    lagging_refreshes: int


def state_attention(conn: Connection, now: datetime, lag_before: datetime) -> list[StateAttention]:
    """Entities per (lifecycle, state), and of those not yet terminal how many failed their
    last observations, are past their deadline, or have a refresh due since before
    `lag_before` (no worker got to it): one pass over `ix_entity_states`, in its order."""
    c = entity_table.c
    live = c.terminal.is_(False)

    def how_many(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((and_(live, condition), 1), else_=0)), 0)

    statement = (
        select(
            c.lifecycle,
            c.state,
            func.count(),
            how_many(c.observation_failures > 0),
            how_many(c.deadline_at < now),
            how_many(c.next_refresh_at < lag_before),
        )
        .group_by(c.lifecycle, c.state)
        .order_by(c.lifecycle, c.state)
    )
    return [
        StateAttention(lc, st, int(n), int(a), int(b), int(d))
        for lc, st, n, a, b, d in conn.execute(statement)
    ]


def leases_by_worker(conn: Connection, now: datetime) -> dict[str, int]:
    """Entities each worker holds a lease on now (expired leases do not count)."""
    c = entity_table.c
    statement = (
        select(c.lease_owner, func.count())
        .where(c.lease_owner.is_not(None), c.lease_expires_at > now)
        .group_by(c.lease_owner)
        .order_by(c.lease_owner)
    )
    return {str(owner): int(n) for owner, n in conn.execute(statement)}


# -- one entity ------------------------------------------------------------------------------


def scheduled_commands(
    conn: Connection, entity_id: str, *, pending_only: bool = False, limit: int = 200
) -> list[ScheduledCommandRow]:
    s = scheduled_command_table.c
    statement = select(scheduled_command_table).where(s.entity_id == entity_id)
    if pending_only:
        statement = statement.where(s.done_at.is_(None))
    statement = statement.order_by(s.due_at, s.id).limit(limit)
    return [ScheduledCommandRow(**r._mapping) for r in conn.execute(statement)]


def entity_row(conn: Connection, entity_id: str) -> EntityRow | None:
    row = conn.execute(select(entity_table).where(entity_table.c.id == entity_id)).first()
    return EntityRow(**row._mapping) if row is not None else None


def history_rows(conn: Connection, entity_id: str) -> list[TransitionRow]:
    t = transition_table.c
    statement = select(transition_table).where(t.entity_id == entity_id).order_by(t.seq)
    return [TransitionRow(**r._mapping) for r in conn.execute(statement)]


def scheduled_command(conn: Connection, command_id: int) -> ScheduledCommandRow | None:
    s = scheduled_command_table.c
    row = conn.execute(select(scheduled_command_table).where(s.id == command_id)).first()
    return ScheduledCommandRow(**row._mapping) if row is not None else None


def children(conn: Connection, entity_id: str, limit: int = 200) -> list[EntityRow]:
    c = entity_table.c
    statement = select(entity_table).where(c.parent_id == entity_id).order_by(c.id).limit(limit)
    return [EntityRow(**r._mapping) for r in conn.execute(statement)]


# -- transitions as they are recorded --------------------------------------------------------


class Mark(NamedTuple):
    """A position in the order transitions are recorded in: (recorded_at, entity_id, seq)."""

    recorded_at: datetime
    entity_id: str
    seq: int


def transitions_after(
    conn: Connection,
    mark: Mark,
    query: EntityQuery,
    limit: int = 500,
) -> list[tuple[str, TransitionRow]]:
    """(lifecycle, transition) recorded after `mark`, oldest first, for entities that match
    the query's filters (its sort and cursor are ignored)."""
    e, t = entity_table.c, transition_table.c
    statement = (
        select(e.lifecycle, transition_table)
        .join(entity_table, e.id == t.entity_id)
        .where(
            tuple_(t.recorded_at, t.entity_id, t.seq)
            > tuple_(
                literal(mark.recorded_at, t.recorded_at.type),
                literal(mark.entity_id, t.entity_id.type),
                literal(mark.seq, t.seq.type),
            )
        )
    )
    if query.state is not None:  # the state the entity moved to
        statement = statement.where(t.to_state == query.state)
        query = replace(query, state=None)
    statement = _filtered(query, statement, conn.dialect.name)
    statement = statement.order_by(t.recorded_at, t.entity_id, t.seq).limit(limit)
    return [(row[0], TransitionRow(*row[1:])) for row in conn.execute(statement)]


def latest_mark(conn: Connection) -> Mark | None:
    t = transition_table.c
    statement = (
        select(t.recorded_at, t.entity_id, t.seq)
        .order_by(t.recorded_at.desc(), t.entity_id.desc(), t.seq.desc())
        .limit(1)
    )
    row = conn.execute(statement).first()
    return Mark(row[0], row[1], row[2]) if row is not None else None
