"""The SQLite write transaction, begun and ended on the driver.

SQLAlchemy's begin and commit (transaction objects, events, reset bookkeeping) cost more than
SQLite's own work for an empty write transaction, and a one-transition commit pays them every
time (bench: persist_single). The statements of a unit of work mostly run on the driver too
(`UnitOfWork.driver`); those that go through SQLAlchemy autobegin its view of this same
transaction (the begin listener sees the driver already in one and emits nothing), and the
transaction then ends through SQLAlchemy, so its state stays true.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError


def _driver_call(statement: str, call: Callable[[], object]) -> None:
    try:
        call()
    except sqlite3.Error as exc:
        raise DBAPIError.instance(statement, (), exc, sqlite3.Error) from exc


@contextmanager
def write_transaction(conn: Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT on `conn`'s driver connection; rolled back if the block raises
    or the commit fails. Driver errors come out wrapped as SQLAlchemy would wrap them."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    _driver_call("BEGIN IMMEDIATE", lambda: driver.execute("BEGIN IMMEDIATE"))
    try:
        yield
        if conn.in_transaction():
            conn.commit()
        else:
            _driver_call("COMMIT", driver.commit)
    except BaseException:
        _roll_back(conn, driver)
        raise


def _roll_back(conn: Connection, driver: sqlite3.Connection) -> None:
    if conn.invalidated:
        return  # the pool discards the driver connection, and its transaction with it
    try:
        if conn.in_transaction():
            conn.rollback()
        elif driver.in_transaction:
            driver.rollback()
    except (sqlite3.Error, DBAPIError):
        conn.invalidate()  # a connection that cannot roll back is not reused
