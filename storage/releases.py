"""Durable release obligations: what an ended entity still holds, until its backend confirms.

An obligation is inserted in the transaction of the entity's terminal transition, so no crash can
lose it; workers claim due ones with a lease (as they claim refreshes), call the backend outside
any transaction, then record the outcome: released, or the error and the next attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, and_, func, insert, inspect, or_, select, update

from storage import claims
from storage.database import redact_text
from storage.records import ReleaseRow
from storage.store import UnitOfWork
from storage.tables import entity_table as entities
from storage.tables import release_table as releases

MAX_ERROR = 2000


def request(uow: UnitOfWork, wanted: Sequence[tuple[str, str]], now: datetime) -> int:
    """Record an obligation per (entity id, terminal state), once per entity; returns how many
    were new."""
    if not wanted:
        return 0
    ids = sorted({entity_id for entity_id, _ in wanted})
    known = set(
        uow.connection.execute(
            select(releases.c.entity_id).where(releases.c.entity_id.in_(ids))
        ).scalars()
    )
    rows = []
    for entity_id, state in wanted:
        if entity_id in known:
            continue
        known.add(entity_id)
        rows.append(
            {
                "entity_id": entity_id,
                "state": state,
                "requested_at": now,
                "attempts": 0,
                "next_attempt_at": now,
            }
        )
    if rows:
        uow.connection.execute(insert(releases), rows)
    return len(rows)


def claim(
    uow: UnitOfWork,
    owner: str,
    now: datetime,
    until: datetime,
    limit: int,
    lifecycles: Sequence[str],
) -> list[ReleaseRow]:
    """Lease due, pending obligations of entities in `lifecycles` (expired claims are taken)."""
    if not lifecycles:
        return []
    return claims.claim_rows(
        uow,
        releases,
        releases.join(entities, entities.c.id == releases.c.entity_id),
        [
            releases.c.released_at.is_(None),
            releases.c.next_attempt_at <= now,
            or_(releases.c.claim_expires_at.is_(None), releases.c.claim_expires_at <= now),
            entities.c.lifecycle.in_(sorted(lifecycles)),
        ],
        [releases.c.next_attempt_at, releases.c.entity_id],
        limit,
        {"claimed_by": owner, "claim_expires_at": until},
        lambda r: ReleaseRow(**r),
        lambda r: (r.next_attempt_at, r.entity_id),
    )


def finish(
    uow: UnitOfWork,
    entity_id: str,
    owner: str,
    now: datetime,
    *,
    error: str | None = None,
    retry_at: datetime | None = None,
) -> bool:
    """Record one attempt: released (no `error`), or failed and due again at `retry_at`. Only
    while `owner` still holds the claim; False otherwise (another worker took it over)."""
    mine = and_(
        releases.c.entity_id == entity_id,
        releases.c.claimed_by == owner,
        releases.c.released_at.is_(None),
    )
    values: dict[str, object] = {
        "attempts": releases.c.attempts + 1,
        "claimed_by": None,
        "claim_expires_at": None,
    }
    if error is None:
        values["released_at"] = now
    else:
        values["last_error"] = redact_text(error)[:MAX_ERROR]
        values["next_attempt_at"] = retry_at or now
    return bool(uow.connection.execute(update(releases).where(mine).values(**values)).rowcount)


def for_entity(conn: Connection, entity_id: str) -> ReleaseRow | None:
    """The entity's obligation, if it has one (None too on a schema older than 0003)."""
    if not _has_table(conn):
        return None
    row = conn.execute(select(releases).where(releases.c.entity_id == entity_id)).one_or_none()
    return None if row is None else ReleaseRow(**row._mapping)


def pending(conn: Connection, limit: int = 20) -> tuple[int, list[ReleaseRow]]:
    """How many obligations are not released yet, and the oldest `limit` of them."""
    if not _has_table(conn):
        return 0, []
    waiting = releases.c.released_at.is_(None)
    total = conn.execute(select(func.count()).select_from(releases).where(waiting)).scalar_one()
    rows = conn.execute(
        select(releases).where(waiting).order_by(releases.c.requested_at).limit(limit)
    )
    return int(total), [ReleaseRow(**r._mapping) for r in rows]


def _has_table(conn: Connection) -> bool:
    return bool(inspect(conn).has_table(releases.name))


def open_count(uow: UnitOfWork, lifecycles: Sequence[str]) -> int:
    """Obligations not released yet of entities in `lifecycles`."""
    if not lifecycles:
        return 0
    query = (
        select(func.count())
        .select_from(releases.join(entities, entities.c.id == releases.c.entity_id))
        .where(releases.c.released_at.is_(None), entities.c.lifecycle.in_(sorted(lifecycles)))
    )
    return int(uow.connection.execute(query).scalar_one())
