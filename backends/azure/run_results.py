"""The outcome of a managed Run Command, read from its instance view."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: output kept per stream in the operation's data; the rest is cut (the database is no log store)
MAX_OUTPUT = 64 * 1024


@dataclass(frozen=True)
class RunResult:
    stdout: str
    stderr: str
    exit_code: int | None
    execution_state: str | None
    start_time: str | None = None
    end_time: str | None = None

    @property
    def succeeded(self) -> bool:
        state = (self.execution_state or "").lower()
        if state and state != "succeeded":
            return False
        return self.exit_code == 0 or (self.exit_code is None and state == "succeeded")

    def to_data(self) -> dict[str, Any]:
        return {
            "stdout": self.stdout,
            "stderr": self.stderr,
            "exit_code": self.exit_code,
            "execution_state": self.execution_state,
            "start_time": self.start_time,
            "end_time": self.end_time,
        }


def read_run_result(body: object) -> RunResult:
    """Output, error, exit code and execution state; ValueError if there is no instance view."""
    properties = body.get("properties") if isinstance(body, Mapping) else None
    view = properties.get("instanceView") if isinstance(properties, Mapping) else None
    if not isinstance(view, Mapping):
        raise ValueError("the run command has no instance view")
    exit_code = view.get("exitCode")
    if isinstance(exit_code, bool) or not isinstance(exit_code, int):
        exit_code = None
    state = view.get("executionState")
    return RunResult(
        stdout=_text(view.get("output")),
        stderr=_text(view.get("error")),
        exit_code=exit_code,
        execution_state=state if isinstance(state, str) else None,
        start_time=_when(view.get("startTime")),
        end_time=_when(view.get("endTime")),
    )


def _when(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) < 64 else None


def _text(value: Any) -> str:
    return value[:MAX_OUTPUT] if isinstance(value, str) else ""
