"""Moves fired, read for the web overview and `fsm diagram --db`: grouped counts in a window,
counts per minute, and each transition recorded since a time (the tally's increments). The
grouped reads are answered by `ix_transition_recorded` alone (migration 0006)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Connection, func, select

from storage.tables import transition_table


class FiredMove(NamedTuple):
    """How often a move of one definition version fired in the window."""

    definition_version: str
    event: str
    from_state: str
    to_state: str
    times: int


_MOVE = (
    transition_table.c.definition_version,
    transition_table.c.event,
    transition_table.c.from_state,
    transition_table.c.to_state,
)


def fired_moves(
    conn: Connection, since: datetime | None, before: datetime | None = None
) -> list[FiredMove]:
    """Moves recorded in [since, before) (unbounded where None), from `ix_transition_recorded`
    alone."""
    t = transition_table.c
    statement = select(*_MOVE, func.count()).group_by(*_MOVE)
    if since is not None:
        statement = statement.where(t.recorded_at >= since)
    if before is not None:
        statement = statement.where(t.recorded_at < before)
    return [FiredMove(v, e, f, to, int(n)) for v, e, f, to, n in conn.execute(statement)]


def _minute(conn: Connection) -> ColumnElement[Any]:
    t = transition_table.c
    if conn.dialect.name == "sqlite":  # fixed-width ISO text: "YYYY-MM-DDTHH:MM"
        return func.substr(t.recorded_at, 1, 16)
    return func.date_trunc("minute", t.recorded_at)


def moves_by_minute(
    conn: Connection, since: datetime, before: datetime
) -> list[tuple[datetime, FiredMove]]:
    """Moves recorded in [since, before), counted per minute (its start, UTC)."""
    t = transition_table.c
    minute = _minute(conn)
    statement = (
        select(minute, *_MOVE, func.count())
        .where(t.recorded_at >= since, t.recorded_at < before)
        .group_by(minute, *_MOVE)
    )
    out = []
    for at, v, e, f, to, n in conn.execute(statement):
        start = at if isinstance(at, datetime) else datetime.fromisoformat(f"{at}:00+00:00")
        out.append((start.astimezone(UTC), FiredMove(v, e, f, to, int(n))))
    return out


class RecordedMove(NamedTuple):
    entity_id: str
    seq: int
    recorded_at: datetime
    move: tuple[str, str, str, str]  # (definition_version, event, from_state, to_state)


def moves_since(conn: Connection, since: datetime, limit: int = 100_000) -> list[RecordedMove]:
    """Each transition recorded at or after `since`, oldest first (the tally's increments)."""
    t = transition_table.c
    statement = (
        select(t.entity_id, t.seq, t.recorded_at, *_MOVE)
        .where(t.recorded_at >= since)
        .order_by(t.recorded_at)
        .limit(limit)
    )
    return [
        RecordedMove(i, q, at, (v, e, f, to)) for i, q, at, v, e, f, to in conn.execute(statement)
    ]
