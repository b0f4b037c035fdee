"""Column types. Times are always timezone-aware UTC in Python, whatever the database keeps."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TIMESTAMP, TypeDecorator, TypeEngine


def to_utc(value: datetime) -> datetime:
    """Return `value` in UTC; a naive datetime is refused, since its zone is a guess."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass a timezone-aware time")
    return value.astimezone(UTC)


@lru_cache(maxsize=256)
def sqlite_time(value: datetime) -> str:
    """The text form kept in SQLite: fixed width, so text order is time order."""
    return to_utc(value).isoformat(timespec="microseconds")


class UtcDateTime(TypeDecorator[datetime]):
    """`timestamptz` on PostgreSQL; fixed-width ISO-8601 text on SQLite (sortable, no tz loss)."""

    impl = TIMESTAMP(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(TIMESTAMP(timezone=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return sqlite_time(value)
        return to_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return datetime.fromisoformat(value)
        stored: datetime = value
        if stored.tzinfo is None:
            return stored.replace(tzinfo=UTC)
        return stored.astimezone(UTC)
