"""`verify` on a database a writer is still committing to: a page of entities and their
histories are two reads, so a transition committed between them must not be reported as a head
behind its history (a live `fsm run`, or a killed worker whose last COMMIT is still landing on
the PostgreSQL server: a loaded CI run saw exactly that), while real damage still is."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from fsm import Engine


def _commit_between_reads(monkeypatch: pytest.MonkeyPatch, engine: Engine, ids: list[str]) -> None:
    """The first histories read of verify runs after another transition of each entity."""
    store = engine.store
    original = store.histories
    fired = []

    def histories(entity_ids: Any) -> Any:
        if not fired:
            fired.append(True)
            for entity_id in ids:
                engine.fire(entity_id, "job_pending")
        return original(entity_ids)

    monkeypatch.setattr(store, "histories", histories)


def test_a_commit_between_the_page_and_its_histories_is_no_violation(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [engine.create("service").id for _ in range(3)]
    _commit_between_reads(monkeypatch, engine, ids)
    assert engine.verify() == []
    assert all(engine.get(i).state == "PENDING" for i in ids)  # the race did happen


def test_a_head_really_behind_its_history_is_still_reported(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [engine.create("service").id for _ in range(2)]
    engine.fire(ids[0], "job_pending")
    with engine.store.engine.begin() as conn:  # damage: the head goes back, its history stays
        conn.execute(
            text("UPDATE entity SET state = 'SUBMITTED', seq = 1 WHERE id = :id"), {"id": ids[0]}
        )
    _commit_between_reads(monkeypatch, engine, ids[1:])
    found = engine.verify()
    assert {v.entity_id for v in found} == {ids[0]}
    assert any("history ends in PENDING" in v.detail for v in found)
