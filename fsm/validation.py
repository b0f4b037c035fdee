"""Field validators for everything that enters the engine or the store.

One set of limits for SQLite and PostgreSQL, checked before anything is written, so a bad value
is a typed `InvalidInput` naming the field, never a driver error, a `RecursionError` or a half
written batch. Every function returns the value it accepted (or a plain copy of it) and raises
`InvalidInput` otherwise; messages never repeat a long or secret-looking value in full.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fsm.definition import MAX_SECONDS
from fsm.errors import InvalidInput

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_INT",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_SECONDS",
    "MAX_TEXT",
    "aware_time",
    "check_json",
    "count",
    "finite_number",
    "json_mapping",
    "json_value",
    "optional_text",
    "profile_name",
    "seconds",
    "text",
]

MAX_TEXT = 200
"""Ids, lifecycle, event and command names, sources: the width of their columns."""
MAX_JSON_DEPTH = 32
"""Containers nested in a payload, entity data or arguments, the outermost mapping included."""
MAX_JSON_BYTES = 1_000_000
"""Size of one payload, data or arguments mapping as JSON text (characters)."""
MAX_INT = 2**63 - 1
"""Integers in JSON stay within 64 bits: what every JSON reader can hold, and cheap to print."""
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Times are accepted in [EARLIEST, LATEST): a deadline or a backoff (at most ten years)
added to any of them still fits in a `datetime` and in both databases."""


def _shown(value: object, limit: int = 40) -> str:
    """A short description of a refused value: its type and length, a prefix only if short."""
    if isinstance(value, str):
        if len(value) <= limit and value.isprintable():
            return repr(value)
        return f"a string of {len(value)} characters"
    return type(value).__name__


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _text_problem(value: str, max_length: int, *, nul: bool = False) -> str | None:
    """Why `value` cannot be stored as text. Ids, names and sources are labels printed on
    terminals: no control character (an escape sequence in a source would drive the terminal
    of whoever runs `fsm watch`). Inside JSON (`nul`) anything goes: it is escaped there."""
    if len(value) > max_length:
        return f"longer than {max_length} characters ({len(value)})"
    if not nul and _CONTROL.search(value):  # NUL breaks PostgreSQL; ESC, CR... a terminal
        return "contains a control character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode (lone surrogate)"
    return None


def text(value: object, field: str, *, max_length: int = MAX_TEXT, empty: bool = False) -> str:
    """A string of at most `max_length` characters, without NUL, encodable as UTF-8."""
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, not {_shown(value)}")
    if not value and not empty:
        raise InvalidInput(field, "must not be empty")
    problem = _text_problem(value, max_length)
    if problem is not None:
        raise InvalidInput(field, problem)
    return value


def optional_text(value: object, field: str, *, max_length: int = MAX_TEXT) -> str | None:
    return None if value is None else text(value, field, max_length=max_length)


PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
"""A backend profile's name: what `backends: [{name: ...}]` accepts and `entity.profile` holds."""


def profile_name(value: object, field: str = "profile") -> str | None:
    """None (the lifecycle's default backend) or a profile name of at most 100 characters."""
    if value is None:
        return None
    name = text(value, field, max_length=100)
    if not PROFILE_NAME.match(name):
        raise InvalidInput(field, "must be letters, digits, '_', '.', '-' (starting alphanumeric)")
    return name


def finite_number(
    value: object,
    field: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> float:
    """A real, finite number (not a bool) within the bounds; `above` is an exclusive minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(field, f"must be a number, not {_shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(field, f"must be finite, not {value}")
    if above is not None and not value > above:
        raise InvalidInput(field, f"must be greater than {above:g}, not {_number(value)}")
    if minimum is not None and value < minimum:
        raise InvalidInput(field, f"must be at least {minimum:g}, not {_number(value)}")
    if maximum is not None and value > maximum:  # big ints compare exactly, never converted
        raise InvalidInput(field, f"must be at most {maximum:g}, not {_number(value)}")
    return float(value)


def _number(value: float) -> str:
    """A number for a message: a huge integer is not converted (nor printed in full)."""
    if isinstance(value, int) and abs(value) > 10**15:
        return (
            f"an integer of {len(str(abs(value))) if abs(value) < 10**4000 else 'over 4000'} digits"
        )
    return f"{value:g}"


def seconds(value: object, field: str, *, positive: bool = False) -> float:
    """A duration in seconds: finite, not negative (or > 0), at most ten years."""
    if positive:
        return finite_number(value, field, above=0, maximum=MAX_SECONDS)
    return finite_number(value, field, minimum=0, maximum=MAX_SECONDS)


def count(value: object, field: str, *, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """An integer (not a bool) in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, f"must be an integer, not {_shown(value)}")
    if not minimum <= value <= maximum:
        raise InvalidInput(field, f"must be between {minimum} and {maximum}")
    return value


def aware_time(value: object, field: str) -> datetime:
    """A timezone-aware datetime within [EARLIEST, LATEST)."""
    if not isinstance(value, datetime):
        raise InvalidInput(field, f"must be a datetime, not {_shown(value)}")
    offset = value.utcoffset()
    if offset is None:
        raise InvalidInput(field, f"must be timezone-aware, got {value!r}")
    try:
        in_range = EARLIEST <= value < LATEST
    except OverflowError:
        in_range = False
    if not in_range:
        raise InvalidInput(
            field, f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}, not {value}"
        )
    return value


class _Bad(Exception):
    """A refused JSON value; `where` collects the path (innermost first) as it propagates."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        self.where: list[str] = []

    def error(self, field: str) -> InvalidInput:
        path = "".join(reversed(self.where))
        if len(path) > 60:
            path = f"{path[:30]}...{path[-25:]}"
        return InvalidInput(f"{field}{path}", self.problem)


def _measure(value: Any, depth: int, max_depth: int) -> int:
    """Check a JSON value (types, finite numbers, string keys, text, depth) without copying it;
    returns an upper bound of its length as JSON text, so the exact size is computed only for
    values that might be too big."""
    kind = type(value)
    if kind is str or isinstance(value, str):
        if value.isascii():
            return 6 * len(value) + 2  # \u00XX at worst
        problem = _text_problem(value, MAX_JSON_BYTES, nul=True)
        if problem is not None:
            raise _Bad(problem)
        return 12 * len(value) + 2  # a surrogate pair of escapes at worst
    if value is None or kind is bool:
        return 5
    if kind is int or (isinstance(value, int) and not isinstance(value, bool)):
        if not -MAX_INT - 1 <= value <= MAX_INT:
            raise _Bad("is an integer beyond 64 bits")
        return 20
    if kind is float or isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad(f"must be a finite number, not {value}")
        return 24
    if depth >= max_depth:
        raise _Bad(f"is nested deeper than {max_depth} levels")
    if kind is dict or isinstance(value, Mapping):
        return _measure_mapping(value, depth + 1, max_depth)
    if kind is list or isinstance(value, (list, tuple)):
        size = 2
        for i, item in enumerate(value):
            try:
                size += _measure(item, depth + 1, max_depth) + 2
            except _Bad as bad:
                bad.where.append(f"[{i}]")
                raise
        return size
    raise _Bad(f"is a {type(value).__name__}, which JSON cannot hold")


def _measure_mapping(value: Mapping[Any, Any], depth: int, max_depth: int) -> int:
    size = 2
    for key, item in value.items():
        if type(key) is not str and not isinstance(key, str):
            raise _Bad(f"has a key that is not a string ({_shown(key)})")
        if not key.isascii():
            problem = _text_problem(key, MAX_JSON_BYTES, nul=True)
            if problem is not None:
                raise _Bad(f"has a key that {problem}")
        try:
            size += _measure(item, depth, max_depth) + 12 * len(key) + 6
        except _Bad as bad:
            bad.where.append(f".{key}" if len(key) <= 40 and key.isprintable() else ".<key>")
            raise
    return size


def _plain(value: Any) -> Any:
    """A copy of a checked JSON value in plain types (dict, list, str, int, float, ...)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def check_json(
    value: object,
    field: str,
    *,
    mapping: bool = True,
    max_depth: int = MAX_JSON_DEPTH,
    max_bytes: int = MAX_JSON_BYTES,
) -> None:
    """Refuse (`InvalidInput`) what is not JSON within the limits; a mapping unless `mapping`
    is False. Copies nothing: the engine's hot path."""
    if mapping and not isinstance(value, Mapping):
        raise InvalidInput(field, f"must be a mapping, not {_shown(value)}")
    try:
        bound = _measure(value, 0, max_depth)
    except _Bad as bad:
        raise bad.error(field) from None
    if bound > max_bytes:
        size = len(json.dumps(value))  # the default encoder (cached); NaN was refused already
        if size > max_bytes:
            raise InvalidInput(field, f"is {size} characters as JSON, more than {max_bytes}")


def json_value(
    value: object,
    field: str,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    max_bytes: int = MAX_JSON_BYTES,
) -> Any:
    """A plain copy (dicts, lists, str, int, float, bool, None) of a JSON-able value."""
    check_json(value, field, mapping=False, max_depth=max_depth, max_bytes=max_bytes)
    return _plain(value)


def json_mapping(
    value: object,
    field: str,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    max_bytes: int = MAX_JSON_BYTES,
) -> dict[str, Any]:
    """A plain dict copy of a mapping with string keys whose values are JSON (see json_value)."""
    check_json(value, field, max_depth=max_depth, max_bytes=max_bytes)
    plain: dict[str, Any] = _plain(value)
    return plain
