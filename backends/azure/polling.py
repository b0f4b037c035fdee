"""Long-running operations polled one step at a time, resumable from a continuation token.

azure-core's `LROPoller` runs its polling method in a thread until the operation ends. The
refresh loop wants the opposite: one status request per operation per cycle, the operation's
continuation token persisted between cycles (and across crashes). `StepPolling` is an ordinary
`ARMPolling` handed to the SDK's own `begin_*` methods through their public `polling=` argument;
it only refuses to sleep, which turns the SDK's poll loop into a single step.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.core.polling import LROPoller
from azure.core.polling.base_polling import OperationFailed
from azure.mgmt.core.polling.arm_polling import ARMPolling


class _NotYet(Exception):
    """The operation is still running after this step."""


class StepPolling(ARMPolling):
    """ARM polling that makes at most one status request per `run()` (none with `poll=False`).

    When that request shows the operation finished, the SDK's usual epilogue runs too (the
    failure check and, for PUT/POST, the final GET), so a finished step means what it means
    for a normal poller.
    """

    def __init__(self, endpoint: str, *, poll: bool) -> None:
        super().__init__(timeout=0, path_format_arguments={"endpoint": endpoint})
        self._poll_now = poll

    def run(self) -> None:
        if not self._poll_now:
            return
        try:
            super().run()
        except _NotYet:
            return

    def _delay(self) -> None:
        raise _NotYet


class StepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True)
class Step:
    """Where an operation stands after one step; `reported` is ARM's own status string."""

    status: StepStatus
    reported: str
    error: str = ""


def classify(reported: str) -> StepStatus:
    """ARM's terminal statuses, compared exactly as azure-core does (case-insensitively, no
    trimming); anything else (InProgress, an unknown word) is still running."""
    word = reported.lower()
    if word == "succeeded":
        return StepStatus.SUCCEEDED
    if word == "failed":
        return StepStatus.FAILED
    if word in ("canceled", "cancelled"):
        return StepStatus.CANCELED
    return StepStatus.RUNNING


def settle(poller: LROPoller[Any]) -> Step:
    """Finish the poller's step and say where the operation stands.

    Raises the `AzureError` of a step that could not tell (throttled, 5xx, garbage): that is a
    failed observation, never a failed operation. Only a status body that says Failed or
    Canceled (azure-core's `OperationFailed`) makes a failed step.
    """
    error = ""
    try:
        poller.wait()
    except HttpResponseError as exc:
        if not isinstance(exc.__cause__, OperationFailed):
            raise
        error = _error_text(exc)
    reported = poller.status()
    if not isinstance(reported, str):
        reported = str(reported)
    status = classify(reported)
    if status is StepStatus.SUCCEEDED and error:
        status = StepStatus.FAILED  # pragma: no cover - azure-core never pairs these
    return Step(status, reported, error)


def _error_text(exc: HttpResponseError) -> str:
    """`code: message` of an ARM error body, else the exception's message (truncated)."""
    try:
        body = json.loads(exc.response.text()) if exc.response is not None else None
    except (ValueError, TypeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"{error.get('code', 'Failed')}: {error.get('message', '')}"[:500]
    return str(exc.message or exc)[:500]


def describe_token(token: str) -> dict[str, str]:
    """The request and status URLs inside a continuation token, for people reading the data.

    The token's layout belongs to azure-core; this is best effort and never used to poll.
    """
    try:
        state = json.loads(base64.b64decode(token))["data"]
        request = state.get("request") or {}
        headers = {k.lower(): v for k, v in (state["response"].get("headers") or {}).items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}
    found = {
        "request": f"{request.get('method', '')} {request.get('url', '')}".strip(),
        "async_operation": headers.get("azure-asyncoperation", ""),
        "location": headers.get("location", ""),
        "retry_after": headers.get("retry-after", ""),
    }
    try:
        float(found["retry_after"])
    except ValueError:
        found["retry_after"] = ""  # an HTTP date: not a number of seconds
    return {k: str(v) for k, v in found.items() if v}
