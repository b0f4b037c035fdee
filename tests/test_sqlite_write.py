"""The SQLite write transaction begun on the driver: what a block writes, through the driver or
through SQLAlchemy, commits together or not at all, and a failed end leaves the store usable."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from fsm import Engine, ManualClock, StorageError
from storage import Store
from storage.store import UnitOfWork
from storage.tables import definition_table


def _open(tmp_path: Path, name: str = "w.db") -> Store:
    store = Store(f"sqlite:///{tmp_path / name}")
    store.migrate()
    return store


def _versions(store: Store) -> set[str]:
    with store.reading() as conn:
        return set(conn.execute(select(definition_table.c.version)).scalars())


@settings(max_examples=25, deadline=None)
@given(driver_first=st.booleans(), through_sqlalchemy=st.booleans(), fail=st.booleans())
def test_driver_and_sqlalchemy_statements_share_one_transaction(
    tmp_path_factory: pytest.TempPathFactory,
    driver_first: bool,
    through_sqlalchemy: bool,
    fail: bool,
) -> None:
    store = _open(tmp_path_factory.mktemp("tx"))
    clock = ManualClock()

    def by_driver(uow: UnitOfWork) -> None:
        uow.driver(
            "INSERT INTO lifecycle_definition (name, version, body, created_at) "
            "VALUES (?, ?, ?, ?)",
            ("d", "by-driver", "{}", "2026-01-01T00:00:00.000000+00:00"),
        )

    def by_sqlalchemy(uow: UnitOfWork) -> None:
        uow.ensure_definition("d", "by-sqlalchemy", {}, clock())

    steps = [by_driver, by_sqlalchemy] if through_sqlalchemy else [by_driver]
    if not driver_first:
        steps.reverse()
    try:
        with store.transaction() as uow:
            for step in steps:
                step(uow)
            if fail:
                raise RuntimeError("the caller's block fails")
    except RuntimeError:
        assert fail
    expected = (
        set() if fail else {"by-driver"} | ({"by-sqlalchemy"} if through_sqlalchemy else set())
    )
    assert _versions(store) == expected
    # the connection is back to no transaction: the next block commits on its own
    with store.transaction() as uow:
        uow.ensure_definition("d", "after", {}, clock())
    assert "after" in _versions(store)
    store.close()


def test_a_commit_refused_rolls_back_and_the_next_write_works(tmp_path: Path) -> None:
    """A deferred foreign key fails at COMMIT, not at its statement: the block's end raises a
    typed error, nothing the block wrote stays, and the thread's connection writes again."""
    engine = Engine(f"sqlite:///{tmp_path / 'refused.db'}", clock=ManualClock())
    entity = engine.create("service")
    store = engine.store
    with store.transaction() as uow:  # temp tables: this connection's own, never persisted
        uow.driver("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)", ())
        uow.driver(
            "CREATE TEMP TABLE child (pid REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
            (),
        )
    with pytest.raises(StorageError), store.transaction() as uow:
        uow.ensure_definition("d", "lost", {}, engine.now())
        uow.driver("UPDATE entity SET observation_failures = 7 WHERE id = ?", (entity.id,))
        uow.driver("INSERT INTO temp.child (pid) VALUES (1)", ())  # no parent 1
    assert "lost" not in _versions(store)
    assert engine.get(entity.id).observation_failures == 0
    engine.fire(entity.id, "job_pending")
    assert engine.get(entity.id).version == entity.version + 1
    engine.close()
