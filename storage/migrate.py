"""Schema creation and upgrades through Alembic (the migrations ship inside the package)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from storage.database import translate
from storage.errors import DatabaseCorrupt

if TYPE_CHECKING:
    from storage.store import Store

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(store: Store) -> None:
    """Bring the store's schema to the newest revision (a no-op when it is there already)."""
    config = alembic_config()
    try:
        with store.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            if current == head_revision():
                return
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise translate(exc, store.url) from exc
    except Exception as exc:  # alembic reports unknown revisions etc. as plain errors
        if type(exc).__module__.startswith("alembic"):
            raise DatabaseCorrupt(f"cannot migrate {store!r}: {exc}") from exc
        raise
