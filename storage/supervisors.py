"""The one read supervision needs that the store has no query for: live entities of a lifecycle."""

from __future__ import annotations

from sqlalchemy import select

from storage.records import EntityRow
from storage.store import Store
from storage.tables import entity_table


def open_entities(store: Store, lifecycle: str, limit: int) -> list[EntityRow]:
    """Non-terminal entities of `lifecycle`, oldest change first (the longest waiting)."""
    query = (
        select(entity_table)
        .where(entity_table.c.lifecycle == lifecycle, entity_table.c.terminal.is_(False))
        .order_by(entity_table.c.updated_at, entity_table.c.id)
        .limit(limit)
    )
    with store.reading() as conn:
        return [EntityRow(**row._mapping) for row in conn.execute(query)]
