"""What an operator does to scheduled commands besides scheduling them: look them up, cancel.

A cancel is one conditional UPDATE: it wins only over a command that is not done and not held
by a live worker claim (a worker in the middle of carrying it out may already have acted on
the backend; that command finishes and is recorded instead). Cancelling marks it done with the
outcome `cancelled`, so the exactly-once bookkeeping of `storage.queue` needs nothing new.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_, select, update

from storage.records import ScheduledCommandRow
from storage.store import Store, UnitOfWork
from storage.tables import scheduled_command_table as commands

CANCELLED = "cancelled"


def get_command(uow: UnitOfWork, command_id: int) -> ScheduledCommandRow | None:
    row = uow.connection.execute(select(commands).where(commands.c.id == command_id)).first()
    return None if row is None else ScheduledCommandRow(**row._mapping)


def cancel_command(
    uow: UnitOfWork, command_id: int, now: datetime, reason: str = CANCELLED
) -> tuple[bool, ScheduledCommandRow | None]:
    """Cancel a pending command: (whether this cancel won, the command as it is now — None if
    there is no such command). It loses to a command already done or held by a live claim."""
    result = uow.connection.execute(
        update(commands)
        .where(
            and_(
                commands.c.id == command_id,
                commands.c.done_at.is_(None),
                or_(commands.c.claim_expires_at.is_(None), commands.c.claim_expires_at <= now),
            )
        )
        .values(done_at=now, outcome=reason[:2000], claimed_by=None, claim_expires_at=None)
    )
    return result.rowcount == 1, get_command(uow, command_id)


def list_commands(
    store: Store, entity_id: str | None = None, pending: bool = False, limit: int = 1000
) -> list[ScheduledCommandRow]:
    """Scheduled commands by due time (a reader: no write lock is taken)."""
    query = select(commands).order_by(commands.c.due_at, commands.c.id).limit(limit)
    if entity_id is not None:
        query = query.where(commands.c.entity_id == entity_id)
    if pending:
        query = query.where(commands.c.done_at.is_(None))
    with store.reading() as conn:
        return [ScheduledCommandRow(**r._mapping) for r in conn.execute(query)]
