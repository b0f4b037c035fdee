"""Alembic environment: runs on the connection handed over by `storage.migrate.upgrade`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from storage.tables import entity_table

target_metadata = entity_table.metadata
connection = context.config.attributes.get("connection")

if connection is None:  # `alembic` command line: use the URL from alembic.ini or $FSM_DB
    from storage.database import resolve_url

    url = context.config.get_main_option("sqlalchemy.url") or resolve_url(None)
    with create_engine(url).begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    context.run_migrations()
