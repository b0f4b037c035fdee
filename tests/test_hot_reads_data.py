"""The hot path's reads return an entity's data exactly as SQLAlchemy's JSON column reads it.

PostgreSQL sends `data` to the hot reads as text (storage.hotsql.read_columns), which the
codec decodes itself; whatever the JSON, every hot read (the read before a write, the claim
of due rows, the page of passed deadlines) must give back the same dict as the ORM's column.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from fsm import Engine, ManualClock
from storage import queue
from storage.tables import entity_table

scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=12)
scalars |= st.floats(allow_nan=False, allow_infinity=False, width=64)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
datas = st.dictionaries(st.text(max_size=10), values, max_size=5)


def test_every_hot_read_decodes_data_as_the_json_column_does(
    db_url: str, clock: ManualClock
) -> None:
    engine = Engine(db_url, clock=clock)
    made = iter(range(10**6))

    @settings(max_examples=40, deadline=None)
    @given(datas)
    def one(data: dict[str, Any]) -> None:
        entity_id = f"d{next(made)}"
        engine.create("service", data=data, id=entity_id)
        now = clock()
        with engine.store.transaction() as uow:
            uow.connection.execute(  # a passed time limit, for the deadline page
                entity_table.update()
                .where(entity_table.c.id == entity_id)
                .values(deadline_at=now - timedelta(seconds=1))
            )
        with engine.store.transaction() as uow:
            stored = uow.connection.execute(
                select(entity_table.c.data).where(entity_table.c.id == entity_id)
            ).scalar_one()
            locked = uow.lock_entities([entity_id])[entity_id].data
            claimed = [
                c.entity.data
                for c in queue.claim_due(uow, "me", now, now + timedelta(seconds=30), 10)
                if c.entity.id == entity_id
            ]
            passed = [r.data for r in queue.due_deadlines(uow, now, 10) if r.id == entity_id]
            uow.connection.execute(  # out of the next example's claim and deadline page
                entity_table.update()
                .where(entity_table.c.id == entity_id)
                .values(next_refresh_at=None, deadline_at=None)
            )
        assert isinstance(stored, dict)
        assert locked == stored
        assert claimed == [stored]
        assert passed == [stored]

    try:
        one()
    finally:
        engine.close()
