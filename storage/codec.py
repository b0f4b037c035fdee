"""How values cross the driver on the hot path, where SQLAlchemy's per-row type processing is
too slow: one codec per dialect, matching what `storage.types` and `JSON` columns store."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from storage.types import sqlite_time


def _json_in_text(value: Any) -> dict[str, Any]:
    if value == "{}":
        return {}
    loaded = json.loads(value) if isinstance(value, (str, bytes)) else value
    return dict(loaded) if loaded is not None else {}


def _time_in_text(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _time_in_native(value: Any) -> datetime | None:
    if value is None:
        return None
    stored: datetime = value
    return stored if stored.tzinfo is UTC else stored.astimezone(UTC)


def _time_out_text(value: datetime | None) -> str | None:
    return None if value is None else sqlite_time(value)


def _time_out_native(value: datetime | None) -> datetime | None:
    return value


@dataclass(frozen=True, slots=True)
class Codec:
    """Converters between Python values and one driver's parameters and results."""

    placeholder: str
    time_out: Callable[[datetime | None], Any]
    time_in: Callable[[Any], Any]  # datetime | None; Any so required columns need no cast
    json_in: Callable[[Any], dict[str, Any]]
    json_out: Callable[[Any], str]
    native_times: bool = False  # time_out is the identity: the driver adapts datetimes itself


SQLITE = Codec(
    placeholder="?",
    time_out=_time_out_text,
    time_in=_time_in_text,
    json_in=_json_in_text,
    json_out=json.dumps,
)
POSTGRES = Codec(
    placeholder="%s",
    time_out=_time_out_native,
    time_in=_time_in_native,
    json_in=_json_in_text,  # the hot reads send JSON as text (hotsql.read_columns)
    json_out=json.dumps,
    native_times=True,
)


def codec_for(dialect: str) -> Codec:
    return SQLITE if dialect == "sqlite" else POSTGRES
