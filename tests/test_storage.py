"""Storage: safe files, typed errors for bad databases, schema = migrations, verify finds damage."""

from __future__ import annotations

import stat
from datetime import UTC
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from fsm import DatabaseCorrupt, DatabaseUnavailable, Engine, Event, ManualClock
from storage import Store
from storage.tables import entity_table


def test_sqlite_file_is_created_private(tmp_path: Path) -> None:
    Engine(f"sqlite:///{tmp_path}/new.db").close()
    mode = stat.S_IMODE((tmp_path / "new.db").stat().st_mode)
    assert mode == 0o600


def test_unreachable_server_is_a_typed_error() -> None:
    with pytest.raises(DatabaseUnavailable, match=r"127\.0\.0\.1"):
        Engine("postgresql://nobody@127.0.0.1:1/nothing")


def test_missing_folder_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match="does not exist"):
        Engine(f"sqlite:///{tmp_path}/no/such/dir/x.db")


def test_file_that_is_not_a_database_is_a_typed_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not sqlite, just text" * 100)
    with pytest.raises(DatabaseCorrupt):
        Engine(f"sqlite:///{bogus}")
    assert bogus.read_bytes().startswith(b"this is not sqlite")


def test_garbage_url_is_a_typed_error() -> None:
    with pytest.raises(DatabaseUnavailable):
        Engine("not a url at all")


def test_migrations_create_exactly_the_declared_schema(db_url: str) -> None:
    store = Store(db_url)
    store.migrate()
    store.migrate()  # idempotent
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), entity_table.metadata)
    store.close()
    assert diff == []


def test_a_reader_never_blocks_a_writer(db_url: str) -> None:
    writer = Engine(db_url, clock=ManualClock())
    s = writer.create("service")
    reader = Store(db_url)
    with reader.reading() as conn:
        conn.execute(text("SELECT count(*) FROM entity")).scalar_one()
        writer.fire(s.id, "job_pending")  # would wait for busy_timeout if reads locked
    assert writer.get(s.id).state == "PENDING"
    reader.close()
    writer.close()


def _damage(engine: Engine, sql: str) -> None:
    with engine.store.engine.begin() as conn:
        conn.execute(text(sql))


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("DELETE FROM transition WHERE seq = 1", "sequence"),
        ("UPDATE entity SET state = 'HEALTHY'", "head"),
        ("UPDATE transition SET to_state = 'HEALTHY' WHERE seq = 1", "illegal"),
        ("UPDATE transition SET from_state = 'STOPPED' WHERE seq = 2", "terminal"),
        ("UPDATE transition SET definition_version = 'nope' WHERE seq = 2", "definition"),
        ("UPDATE entity SET seq = 5", "head"),
    ],
)
def test_verify_reports_each_kind_of_damage(engine: Engine, sql: str, kind: str) -> None:
    s = engine.create("service")
    for event in ("job_pending", "job_running"):
        engine.fire(s.id, event)
    assert engine.verify() == []
    _damage(engine, sql)
    kinds = {v.kind for v in engine.verify()}
    assert kind in kinds, engine.verify()


@pytest.mark.postgres
def test_postgres_sessions_read_times_in_utc_whatever_the_server_zone(pg_url: str) -> None:
    # a server (or URL) in another zone: times still come back in datetime.UTC itself, the
    # same instants, so the hot path has nothing to convert
    url = pg_url.replace("options=", "options=-cTimeZone%3DAsia/Kolkata%20", 1)
    clock = ManualClock()
    engine = Engine(url, clock=clock)
    created = engine.create("service")
    engine.apply([Event(created.id, "job_pending")])
    with engine.store.transaction() as uow:
        row = uow.lock_entities([created.id])[created.id]
        zone = uow.connection.execute(text("SHOW TIME ZONE")).scalar_one()
    engine.close()
    assert zone == "UTC"
    assert row.created_at.tzinfo is UTC
    assert row.state_entered_at.tzinfo is UTC
    assert row.created_at == clock.now
    assert row.state == "PENDING"
