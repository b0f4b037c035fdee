"""Cancelling a scheduled command before any worker ran it (the web API's `cancel`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_, update

from storage.store import UnitOfWork
from storage.tables import scheduled_command_table


def cancel_command(
    uow: UnitOfWork, command_id: int, entity_id: str, now: datetime, outcome: str
) -> bool:
    """Mark the command done with `outcome`, only while it is pending and no worker holds a
    live claim on it; False when it ran, is running, or does not belong to `entity_id`."""
    s = scheduled_command_table.c
    statement = (
        update(scheduled_command_table)
        .where(
            s.id == command_id,
            s.entity_id == entity_id,
            s.done_at.is_(None),
            or_(
                s.claimed_by.is_(None),
                and_(s.claim_expires_at.is_not(None), s.claim_expires_at < now),
            ),
        )
        .values(done_at=now, outcome=outcome[:2000], claimed_by=None, claim_expires_at=None)
    )
    return uow.connection.execute(statement).rowcount == 1
