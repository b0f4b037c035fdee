"""Reads by backend profile (`entity.profile`, migration 0004), for `fsm status`."""

from __future__ import annotations

from sqlalchemy import func, select

from storage.store import Store
from storage.tables import entity_table


def count_by_profile(store: Store) -> dict[tuple[str, str], tuple[int, int]]:
    """(profile, lifecycle) -> (live, total), for the entities that have a profile."""
    t = entity_table.c
    query = (
        select(t.profile, t.lifecycle, t.terminal, func.count())
        .where(t.profile.is_not(None))
        .group_by(t.profile, t.lifecycle, t.terminal)
    )
    found: dict[tuple[str, str], tuple[int, int]] = {}
    with store.reading() as conn:
        for profile, lifecycle, terminal, n in conn.execute(query):
            live, total = found.get((profile, lifecycle), (0, 0))
            found[profile, lifecycle] = (live + (0 if terminal else int(n)), total + int(n))
    return dict(sorted(found.items()))
