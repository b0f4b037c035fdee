"""Migration 0006 (index diet): a database written at 0005 moves to it with its data, verifies
clean, reads the same histories and past states; down to 0005 and up again keeps all of it."""

from __future__ import annotations

import importlib
from datetime import datetime
from typing import Any

from alembic import command

from backends.sim import SimBackend, populate
from fsm import Engine, Event, ManualClock, NewEntity
from fsm.worker import Worker
from storage import Store, command_admin
from storage.migrate import alembic_config, head_revision

diet = importlib.import_module("storage.migrations.versions.0006_index_diet")
TABLES = ("entity", "transition", "scheduled_command", "release_obligation")


def _move(store: Store, revision: str, *, down: bool = False) -> None:
    config = alembic_config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)


def _indexes(store: Store) -> set[tuple[str, bool]]:
    """(name, whether it is partial) of every index on the product tables."""
    if store.dialect == "sqlite":
        sql = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name IN "
    else:
        sql = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        sql += "AND tablename IN "
    sql += "('" + "', '".join(TABLES) + "')"
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(sql).all()
    return {(str(name), " WHERE " in (text or "").upper()) for name, text in rows}


def _schema(specs: tuple[tuple[str, str, list[str], str | None], ...]) -> set[tuple[str, bool]]:
    return {(name, where is not None) for name, _table, _columns, where in specs}


def _snapshot(engine: Engine, times: list[datetime]) -> dict[str, Any]:
    entities = engine.list_entities()
    return {
        "entities": entities,
        "histories": {e.id: engine.history(e.id) for e in entities},
        "states_at": {(e.id, t): engine.state_at(e.id, t) for e in entities for t in times},
        "counts": engine.counts(),
        "commands": command_admin.list_commands(engine.store),
    }


def test_a_database_written_at_0005_moves_to_0006_and_back(db_url: str) -> None:
    old, new = _schema(diet.OLD), _schema(diet.NEW)
    store = Store(db_url)
    _move(store, "0005")
    assert old <= _indexes(store) and not new & _indexes(store)

    clock = ManualClock()
    engine = Engine(store, clock=clock, refresh_scale=0.05, migrate=False)
    sim = SimBackend(5)
    populate(engine, sim, services=40, hosts=2, operations=2, stop_every=5)
    engine.create("service", id="parent", profile="laptop")
    engine.create_many(
        [NewEntity("service", {}, f"child-{i}", "parent", "laptop") for i in range(3)]
    )
    engine.apply([Event(f"child-{i}", "job_pending", {"n": i}, data={"i": i}) for i in range(3)])
    worker = Worker(engine, [sim])
    worker.schedule("parent", "stop", delay=3600)  # still pending after the move
    times = [clock()]
    for _ in range(30):
        worker.tick()
        clock.advance(0.3)
        times.append(clock())
    assert engine.verify() == []
    before = _snapshot(engine, times[::6])
    assert sum(len(h) for h in before["histories"].values()) > 50  # real history moved
    engine.close()

    store = Store(db_url)
    _move(store, "head")
    assert head_revision() == "0006"
    assert new <= _indexes(store) and not old & _indexes(store)
    engine = Engine(store, clock=clock, refresh_scale=0.05)
    assert engine.verify() == []
    assert _snapshot(engine, times[::6]) == before
    engine.close()

    store = Store(db_url)
    _move(store, "0005", down=True)
    assert old <= _indexes(store) and not new & _indexes(store)
    engine = Engine(store, clock=clock, refresh_scale=0.05, migrate=False)
    assert engine.verify() == []
    assert _snapshot(engine, times[::6]) == before
    engine.close()

    engine = Engine(db_url, clock=clock, refresh_scale=0.05)  # up again; the worker goes on
    worker = Worker(engine, [sim])
    for _ in range(50):
        worker.tick()
        clock.advance(0.3)
    assert engine.verify() == []
    for entity_id, history in before["histories"].items():
        assert engine.history(entity_id)[: len(history)] == history
    engine.close()
