"""What went wrong talking to ARM, as failed observations (never lifecycle events)."""

from __future__ import annotations

from collections.abc import Mapping

from azure.core.exceptions import (
    DecodeError,
    HttpResponseError,
    ServiceRequestTimeoutError,
    ServiceResponseTimeoutError,
)
from azure.core.polling.base_polling import BadResponse

from fsm.observation import FailureKind, Observation


def failure(entity_id: str, exc: BaseException) -> Observation:
    """A failed observation for whatever went wrong talking to ARM; never a lifecycle event."""
    detail = describe(exc)
    if isinstance(exc, HttpResponseError) and exc.status_code == 429:
        return Observation.failed(
            entity_id, FailureKind.THROTTLED, detail, retry_after=retry_after(exc)
        )
    if isinstance(exc, (ServiceRequestTimeoutError, ServiceResponseTimeoutError)):
        return Observation.failed(entity_id, FailureKind.TIMEOUT, detail)
    if isinstance(exc, DecodeError) or isinstance(exc.__cause__, BadResponse):
        return Observation.failed(entity_id, FailureKind.GARBAGE, detail)
    if isinstance(exc, HttpResponseError):
        return Observation.failed(
            entity_id, FailureKind.ERROR, detail, retry_after=retry_after(exc)
        )
    if isinstance(exc, (ValueError, TypeError, KeyError, AttributeError, IndexError)):
        return Observation.failed(entity_id, FailureKind.GARBAGE, detail)
    return Observation.failed(entity_id, FailureKind.ERROR, detail)


def retry_after(exc: HttpResponseError) -> float | None:
    """Seconds from a Retry-After header (delta seconds only), if the response had one."""
    headers = getattr(exc.response, "headers", None)
    value = headers.get("Retry-After") if isinstance(headers, Mapping) else None
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86400 else None


def describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    text = str(getattr(exc, "message", None) or exc).splitlines()[0] if str(exc) else ""
    prefix = f"HTTP {status}: " if status else ""
    return f"{prefix}{type(exc).__name__}: {text}"[:500]
