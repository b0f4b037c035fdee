"""The database as the durable work queue: leases on due entities, deadlines, scheduled commands.

Workers claim due rows with `FOR UPDATE SKIP LOCKED` (PostgreSQL) plus a lease that expires, so
several processes share the work and a dead worker's rows are taken over; on SQLite one worker
owns the file and the same statements run under its write lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update

from storage import claims
from storage.database import redact_text
from storage.hotsql import LOCK_IN_ORDER
from storage.records import Claim, EntityRow, RefreshMark, ScheduledCommandRow
from storage.store import UnitOfWork
from storage.tables import entity_table
from storage.tables import scheduled_command_table as commands

_CHUNK = 500


def claim_due(
    uow: UnitOfWork,
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    lifecycles: Sequence[str] | None = None,
    due_by: datetime | None = None,
) -> list[Claim]:
    """Lease up to `limit` entities due by `due_by` (default `now`) that nobody else holds.

    On PostgreSQL the transaction commits without waiting for its WAL flush (see
    `claims.claim_entities`): run it in a transaction of its own, as the worker does."""
    ph, out = uow.hot.codec.placeholder, uow.hot.codec.time_out
    params: list[Any] = [out(due_by or now), out(now)]
    only = ""
    if lifecycles:
        # SQLite: `+lifecycle` keeps the planner off ix_entity_states and ix_entity_counts,
        # which would read every row of the lifecycle and sort them for each batch (a cycle
        # quadratic in the number of entities); the next_refresh_at index yields the batch in
        # order.
        column = "+lifecycle" if uow.hot.sqlite else "lifecycle"
        only = f" AND {column} IN ({', '.join(ph for _ in lifecycles)})"
        params.extend(lifecycles)
    where = (
        f"next_refresh_at <= {ph} AND (lease_expires_at IS NULL OR lease_expires_at <= {ph}){only}"
    )
    return claims.claim_entities(uow, owner, lease_until, where, params, limit)


def reread_claims(uow: UnitOfWork, owner: str, held: Sequence[Claim]) -> dict[str, EntityRow]:
    """The claimed entities read again in the write transaction (locked where the database
    can), those whose lease `owner` still holds; a row unchanged since its claim is the
    claim's own record, not converted again."""
    ids = [c.entity.id for c in held]
    if uow.locks_rows:
        rows = _relock(uow, held)
    elif any(c.raw is None for c in held):
        rows = uow.lock_entities(ids)
    else:
        hot = uow.hot
        claimed = {c.entity.id: c for c in held}
        rows = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            sql, _ = hot.select_by_ids(len(chunk), lock=False)
            for values in uow.driver(sql, tuple(chunk)).fetchall():
                claim = claimed[values[0]]
                rows[values[0]] = claim.entity if values == claim.raw else hot.entity_from(values)
    return {i: row for i in ids if (row := rows.get(i)) is not None and row.lease_owner == owner}


# the version, and what can change on a row without it moving (leases, refresh marks, pulls)
_UNVERSIONED = (
    "version",
    "lease_owner",
    "lease_expires_at",
    "next_refresh_at",
    "observation_failures",
    "last_observed_at",
)
_unversioned_of = attrgetter(*_UNVERSIONED)
_RELOCK = f"SELECT id, {', '.join(_UNVERSIONED)} FROM entity WHERE id = ANY(%s){LOCK_IN_ORDER}"


def _relock(uow: UnitOfWork, held: Sequence[Claim]) -> dict[str, EntityRow]:
    """PostgreSQL: lock the claimed rows in the global order, reading only the columns that
    change without a version bump; a row whose values all match its claim is the claim's
    record (no second transfer and decoding of the whole row, JSON data included), the rest
    are read whole. Each lock is still taken: it is what keeps a concurrent batch out."""
    claimed = {c.entity.id: c.entity for c in held}
    rows: dict[str, EntityRow] = {}
    moved: list[str] = []
    ordered = sorted(claimed)
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        for values in uow.driver(_RELOCK, (chunk,)).fetchall():
            entity = claimed[values[0]]
            # aware datetimes compare as instants: the session's zone does not matter here
            if tuple(values[1:]) == _unversioned_of(entity):
                rows[entity.id] = entity
            else:
                moved.append(entity.id)
    if moved:
        rows.update(uow.lock_entities(moved))  # already locked by us: this only reads them
    return rows


def finish_refresh(uow: UnitOfWork, owner: str, marks: Sequence[RefreshMark]) -> int:
    """Set the next refresh time and failure count (and, for an observation that succeeded,
    when it was made) and drop our lease; only where we still hold it (a worker whose lease
    expired writes nothing). Returns how many rows were ours."""
    if not marks:
        return 0
    if uow.locks_rows:
        return _finish_refresh_set(uow, owner, marks)
    out = uow.hot.batch_time_out(len(marks))  # a batch shares a few times: each formatted once
    params = [
        (out(m.next_refresh_at), m.observation_failures, out(m.observed_at), m.id, owner)
        for m in marks
    ]
    return int(uow.driver(uow.hot.finish_refresh, params, many=True).rowcount)  # SQLite


_FINISH_SET = (
    "UPDATE entity SET next_refresh_at = m.next_at, observation_failures = m.failures, "
    "last_observed_at = COALESCE(m.observed_at, entity.last_observed_at), "
    "lease_owner = NULL, lease_expires_at = NULL "
    "FROM unnest(%s::text[], %s::timestamptz[], %s::int[], %s::timestamptz[]) "
    "AS m(id, next_at, failures, observed_at) WHERE entity.id = m.id AND entity.lease_owner = %s"
)


def _finish_refresh_set(uow: UnitOfWork, owner: str, marks: Sequence[RefreshMark]) -> int:
    """PostgreSQL: every mark in one statement (one plan and executor start for the batch, not
    one per row); the ids in one global order, as every batch locks them."""
    ordered = sorted(marks, key=lambda m: m.id)
    params = (
        [m.id for m in ordered],
        [m.next_refresh_at for m in ordered],
        [m.observation_failures for m in ordered],
        [m.observed_at for m in ordered],
        owner,
    )
    return int(uow.driver(_FINISH_SET, params).rowcount)


def pull_refresh(uow: UnitOfWork, ids: Sequence[str], now: datetime) -> int:
    """Make entities due for a refresh now (a deadline needs a look before it may fire)."""
    if not ids:
        return 0
    ph, out = uow.hot.codec.placeholder, uow.hot.codec.time_out
    sql = f"UPDATE entity SET next_refresh_at = {ph} WHERE id = {ph}"
    params = [(out(now), entity_id) for entity_id in ids]
    arg: Any = params[0] if len(params) == 1 else params
    return int(uow.connection.exec_driver_sql(sql, arg).rowcount)


def release_leases(uow: UnitOfWork, owner: str) -> int:
    """Give back every lease `owner` holds (graceful shutdown)."""
    ph = uow.hot.codec.placeholder
    sql = f"UPDATE entity SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = {ph}"
    return int(uow.connection.exec_driver_sql(sql, (owner,)).rowcount)


def due_deadlines(
    uow: UnitOfWork,
    now: datetime,
    limit: int,
    looked_at: Sequence[str] = (),
    look_by: datetime | None = None,
) -> list[EntityRow]:
    """Non-terminal entities whose state's time limit has passed, oldest deadline first.

    Entities of the `looked_at` lifecycles (a backend observes them) that have had no
    successful look since their deadline and have one scheduled by `look_by` are left out: the
    refresh decides them, and they must not crowd the others out of the page."""
    hot, ph = uow.hot, uow.hot.codec.placeholder
    out = hot.codec.time_out
    params: list[Any] = [out(now), False]
    waiting = ""
    if looked_at:
        names = ", ".join(ph for _ in looked_at)
        waiting = (
            f" AND (lifecycle NOT IN ({names}) OR last_observed_at >= deadline_at "
            f"OR next_refresh_at IS NULL OR next_refresh_at > {ph})"
        )
        params += [*looked_at, out(look_by or now)]
    sql = (
        f"{hot.select_entities}deadline_at <= {ph} "
        f"AND terminal = {ph}{waiting} ORDER BY deadline_at LIMIT {ph}"
    )
    if uow.locks_rows:
        sql += " FOR UPDATE SKIP LOCKED"
    params.append(limit)
    return [hot.entity_from(v) for v in uow.connection.exec_driver_sql(sql, tuple(params))]


def schedule_command(
    uow: UnitOfWork,
    entity_id: str,
    command: str,
    arguments: Mapping[str, Any],
    due_at: datetime,
    now: datetime,
) -> int:
    result = uow.connection.execute(
        insert(commands).returning(commands.c.id),
        {
            "entity_id": entity_id,
            "command": command,
            "arguments": dict(arguments),
            "due_at": due_at,
            "created_at": now,
        },
    )
    return int(result.scalar_one())


def claim_commands(
    uow: UnitOfWork, owner: str, now: datetime, lease_until: datetime, limit: int
) -> list[ScheduledCommandRow]:
    """Lease due, not yet done commands (an expired claim of a dead worker is taken over)."""
    return claims.claim_rows(
        uow,
        commands,
        commands,
        [
            commands.c.done_at.is_(None),
            commands.c.due_at <= now,
            or_(commands.c.claim_expires_at.is_(None), commands.c.claim_expires_at <= now),
        ],
        [commands.c.due_at, commands.c.id],
        limit,
        {"claimed_by": owner, "claim_expires_at": lease_until},
        lambda r: ScheduledCommandRow(**r),
        lambda c: (c.due_at, c.id),
    )


def complete_command(
    uow: UnitOfWork, command_id: int, owner: str, now: datetime, outcome: str
) -> bool:
    """Mark a command done, once: False if it was done already or another worker took it."""
    result = uow.connection.execute(
        update(commands)
        .where(
            and_(
                commands.c.id == command_id,
                commands.c.claimed_by == owner,
                commands.c.done_at.is_(None),
            )
        )
        .values(
            done_at=now, outcome=redact_text(outcome)[:2000], claimed_by=None, claim_expires_at=None
        )
    )
    return result.rowcount == 1


def list_commands(uow: UnitOfWork, entity_id: str | None = None) -> list[ScheduledCommandRow]:
    query = select(commands).order_by(commands.c.due_at, commands.c.id)
    if entity_id is not None:
        query = query.where(commands.c.entity_id == entity_id)
    return [ScheduledCommandRow(**r._mapping) for r in uow.connection.execute(query)]


def open_work(uow: UnitOfWork) -> int:
    """Entities not in a terminal state plus scheduled commands not yet done."""
    entities = uow.connection.execute(
        select(func.count()).select_from(entity_table).where(entity_table.c.terminal.is_(False))
    ).scalar_one()
    pending = uow.connection.execute(
        select(func.count()).select_from(commands).where(commands.c.done_at.is_(None))
    ).scalar_one()
    return int(entities) + int(pending)
