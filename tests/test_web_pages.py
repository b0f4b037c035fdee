"""Keyset pages as a property: for any entities and any filters, sort order and page size,
walking the pages from the first cursor to the last shows exactly the matching entities, each
once, in order — what one query without pagination would return."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsm import Engine, ManualClock
from storage.pages import SORTS, EntityQuery, entity_page

STATES = ["SUBMITTED", "PENDING", "STARTING"]
STEPS = {"SUBMITTED": [], "PENDING": ["job_pending"], "STARTING": ["job_pending", "job_running"]}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """40 services and hosts with ties in every time column (a manual clock moves in steps)."""
    clock = ManualClock()
    made = Engine(f"sqlite:///{tmp_path_factory.mktemp('pages')}/fsm.db", clock=clock)
    for i in range(40):
        if i % 3 == 0:
            clock.advance(1)
        lifecycle = "host" if i % 5 == 0 else "service"
        entity = made.create(lifecycle, {"name": f"n{i % 7}", "i": i}, id=f"e{(i * 7) % 40:02d}")
        if lifecycle == "service":
            for event in STEPS[STATES[i % 3]]:
                made.fire(entity.id, event, {})
    yield made
    made.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lifecycle=st.sampled_from([None, "service", "host"]),
    state=st.sampled_from([None, *STATES, "NEW"]),
    text=st.sampled_from([None, "n3", "e1", "zz"]),
    sort=st.sampled_from(SORTS),
    descending=st.booleans(),
    limit=st.integers(1, 9),
)
def test_walking_the_pages_shows_every_match_once_in_order(
    engine: Engine,
    lifecycle: str | None,
    state: str | None,
    text: str | None,
    sort: str,
    descending: bool,
    limit: int,
) -> None:
    everyone = engine.list_entities()
    expected = [
        e
        for e in everyone
        if (lifecycle is None or e.lifecycle == lifecycle)
        and (state is None or e.state == state)
        and (text is None or text in e.id or text in json.dumps(e.data))
    ]
    expected.sort(key=lambda e: (getattr(e, sort), e.id), reverse=descending)
    seen = []
    query = EntityQuery(
        lifecycle=lifecycle,
        state=state,
        text=text,
        sort=sort,
        descending=descending,
        limit=limit,  # type: ignore[arg-type]
    )
    with engine.store.reading() as conn:
        for _ in range(100):
            page = entity_page(conn, query)
            assert len(page.rows) <= limit
            seen.extend(page.rows)
            if page.next_cursor is None:
                break
            query = replace(query, after=page.next_cursor)
    assert [e.id for e in seen] == [e.id for e in expected]
