"""What a backend reports about one entity: the events it implies, or that it could not tell."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple


class FailureKind(StrEnum):
    """Why an observation failed. A failed observation never becomes a lifecycle event."""

    TIMEOUT = "timeout"  # the call did not answer in time
    ERROR = "error"  # non-zero exit, HTTP 5xx, connection refused, ...
    THROTTLED = "throttled"  # HTTP 429 or the scheduler asked us to back off
    GARBAGE = "garbage"  # an answer we could not parse
    MISSING = "missing"  # the backend does not know the entity (yet)


class Observation(NamedTuple):
    """The result of observing one entity.

    `events` are applied in order (empty: nothing changed). `failure` set means the backend
    could not tell; the entity keeps its state and is polled again after a backoff.
    """

    entity_id: str
    events: tuple[str, ...] = ()
    payload: Mapping[str, Any] | None = None
    data: Mapping[str, Any] | None = None
    observed_at: datetime | None = None
    failure: FailureKind | None = None
    detail: str = ""
    retry_after: float | None = None

    @classmethod
    def failed(
        cls,
        entity_id: str,
        kind: FailureKind,
        detail: str = "",
        *,
        retry_after: float | None = None,
    ) -> Observation:
        return cls(entity_id, failure=kind, detail=detail[:500], retry_after=retry_after)
