"""Migration 0003 (worker): a database with data at 0002 moves to it and stays verifiable;
down and up again keeps everything but what 0003 added."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from backends.sim import SimBackend, populate
from fsm import Engine, ManualClock
from fsm.worker import Worker
from storage import Store
from storage.migrate import alembic_config, head_revision


def _move(store: Store, revision: str, down: bool) -> None:
    config = alembic_config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)


def test_a_database_with_data_moves_from_0002_to_0003(db_url: str) -> None:
    clock = ManualClock()
    engine = Engine(db_url, clock=clock, refresh_scale=0.05)
    sim = SimBackend(3)
    populate(engine, sim, services=40, hosts=2, stop_every=5)
    worker = Worker(engine, [sim])
    for _ in range(30):
        worker.tick()
        clock.advance(0.2)
    before = {e.id: (e.state, e.version, e.seq) for e in engine.list_entities()}
    histories = {i: engine.history(i) for i in before}
    engine.close()

    store = Store(db_url)
    _move(store, "0002", down=True)
    with store.engine.connect() as conn:
        assert "release_obligation" not in inspect(conn).get_table_names()
        assert "last_observed_at" not in {c["name"] for c in inspect(conn).get_columns("entity")}
    store.close()

    assert head_revision() >= "0003"  # later migrations (0004: entity.profile) chain after it
    engine = Engine(db_url, clock=clock, refresh_scale=0.05)  # migrates to the newest
    after = {e.id: (e.state, e.version, e.seq) for e in engine.list_entities()}
    assert after == before
    assert {i: engine.history(i) for i in after} == histories
    assert all(e.last_observed_at is None for e in engine.list_entities())
    assert engine.verify() == []
    worker = Worker(engine, [sim])
    for _ in range(400):
        worker.tick()
        if worker.open_work() == 0:
            break
        clock.advance(0.2)
    assert worker.open_work() == 0
    assert engine.verify() == []
    engine.close()
