"""The refresh's re-read of its claims is the truth of the row at write time.

Between the claim and the write, other writers may move an entity (a fire: a new version) or
touch what changes without a version (a lease taken over, a pull to refresh now, refresh marks).
The re-read may reuse the claim's record only when the row is exactly that record; whatever it
returns must equal a whole, fresh read of the rows the owner still holds.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fsm import Engine, ManualClock
from storage import queue

# what another writer does to one claimed row between the claim and the write
CHANGES = (
    "none",
    "fire",
    "fire_same_due",
    "taken",
    "lease_until",
    "pulled",
    "failures",
    "observed",
)


def _change(engine: Engine, entity_id: str, change: str, clock: ManualClock) -> None:
    if change == "none":
        return
    later = clock() + timedelta(seconds=7)
    if change.startswith("fire"):
        due = engine.get(entity_id).next_refresh_at
        engine.fire(entity_id, "job_pending")
        if change == "fire":
            return
        change, later = "pulled", due  # only the version (and the head) tells this one apart
    sql: dict[str, tuple[str, tuple[Any, ...]]] = {
        "taken": ("UPDATE entity SET lease_owner = 'other' WHERE id = {}", ()),
        "lease_until": ("UPDATE entity SET lease_expires_at = {} WHERE id = {}", (later,)),
        "pulled": ("UPDATE entity SET next_refresh_at = {} WHERE id = {}", (later,)),
        "failures": ("UPDATE entity SET observation_failures = 3 WHERE id = {}", ()),
        "observed": ("UPDATE entity SET last_observed_at = {} WHERE id = {}", (later,)),
    }
    text, params = sql[change]
    with engine.store.transaction() as uow:
        codec = uow.hot.codec
        values = tuple(codec.time_out(p) for p in params)
        text = text.format(*([codec.placeholder] * (len(params) + 1)))
        uow.connection.exec_driver_sql(text, (*values, entity_id))


def test_the_re_read_equals_a_fresh_whole_read_of_what_is_still_ours(
    db_url: str, clock: ManualClock
) -> None:
    engine = Engine(db_url, clock=clock)
    made = iter(range(10**6))

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.sampled_from(CHANGES), min_size=1, max_size=8))
    def one_batch(changes: list[str]) -> None:
        run = next(made)
        ids = [engine.create("service", id=f"r{run}-{i}").id for i in range(len(changes))]
        now = clock()
        with engine.store.transaction() as uow:
            claims = queue.claim_due(uow, "me", now, now + timedelta(seconds=30), 100)
        assert sorted(c.entity.id for c in claims) == sorted(ids)
        for entity_id, change in zip(ids, changes, strict=True):
            _change(engine, entity_id, change, clock)
        with engine.store.transaction() as uow:
            ours = queue.reread_claims(uow, "me", claims)
            whole = uow.lock_entities(ids)
        expected = {
            i: whole[i] for i in (c.entity.id for c in claims) if whole[i].lease_owner == "me"
        }
        assert ours == expected
        assert list(ours) == list(expected)  # in the claims' order
        claimed = {c.entity.id: c.entity for c in claims}
        for entity_id, change in zip(ids, changes, strict=True):
            if change == "none":
                assert ours[entity_id] is claimed[entity_id]  # reused, not read again
        with engine.store.transaction() as uow:  # give the leases back for the next example
            uow.connection.exec_driver_sql(
                "UPDATE entity SET lease_owner = NULL, lease_expires_at = NULL, "
                "next_refresh_at = NULL"
            )

    try:
        one_batch()
    finally:
        engine.close()
