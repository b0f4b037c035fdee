"""Remote execution (mlos_bench's `SupportsRemoteExec`): a script is an operation entity.

Shapes follow upstream's AzureVMService: `wait_remote_exec_operation` returns the run's
instance view (`{"properties": {"instanceView": {output, error, exitCode, executionState,
startTime, endTime}}}`), and `get_remote_exec_results` goes through it and returns
`stdout` / `stderr` as lists of lines, `exitCode`, `startTimestamp` and `endTimestamp`.
A service with `OUTPUT_AS_LINES = False` (or a config with `"outputLines": false`) returns
them as strings instead, as upstream's SSH host service does: mlos_bench 0.6.2's RemoteEnv
matches `results_stdout_pattern` with `re.findall`, which raises TypeError on a list — with
upstream's AzureVMService too — so a config that reads results from stdout needs strings.

One deliberate difference: a script that ran and failed keeps its output (upstream's wait
drops it), so the caller can see why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from mlos_bench.environments.status import Status

from backends.hostctl import Progress
from backends.mlos.base import EngineServiceCore, Result, status_of
from fsm import Entity, FsmError

log = logging.getLogger(__name__)


class RemoteExecution(EngineServiceCore):
    """Scripts on the host, through the engine."""

    #: stdout / stderr as lists of lines (upstream's Azure service) or strings (its SSH one)
    OUTPUT_AS_LINES = True

    def _exec_refusal(self, host: Entity | None, config: Mapping[str, Any]) -> str | None:
        """Why a script cannot run on `host` (None: send it; the cloud has the last word)."""
        if host is None:
            return f"{self._host_key(config)} does not exist"
        return None

    def remote_exec(
        self, script: Iterable[str], config: dict[str, Any], env_params: dict[str, Any]
    ) -> Result:
        """Run the script on the host; `env_params` become its environment variables
        (recorded by name only, never interpolated into the script's text)."""
        lines = [str(line) for line in script]
        host = self._host(config)
        refusal = self._exec_refusal(host, config)
        if refusal is not None:
            log.warning("remote_exec refused: %s", refusal)
            return Status.FAILED, {}
        try:
            ticket = self.hosts.execute(
                host.id if host is not None else None,
                {
                    "script": lines,
                    "secrets": dict(env_params),
                    # the script's own limit follows pollTimeout: it never outlives the wait
                    "timeout": int(self.settings.poll_timeout),
                },
                operation_data=self._exec_data(config),
                time_limit=self.settings.poll_timeout,
            )
        except (FsmError, ValueError) as exc:
            log.warning("remote_exec refused: %s", exc)
            return Status.FAILED, {}
        progress, info = self.hosts.progress(ticket)
        result = {
            **config,
            "asyncResultsUrl": ticket.url(),
            "pollInterval": self.settings.poll_interval,
        }
        if progress is Progress.FAILED:  # refused, or it ran here at once and failed
            return Status.FAILED, {**result, **self._shape(Status.FAILED, _instance_view(info))[1]}
        if progress is Progress.SUCCEEDED:
            return Status.SUCCEEDED, result
        return Status.PENDING, result

    def wait_remote_exec_operation(self, params: dict[str, Any]) -> Result:
        """Wait for the script; its instance view when it finished (succeeded or failed)."""
        progress, info = self._wait(params)
        if progress is None:
            return Status.PENDING, {}
        status = status_of(progress)
        if progress in (Progress.SUCCEEDED, Progress.FAILED) and "executionState" in info:
            return status, _instance_view(info)
        return status, {}

    def get_remote_exec_results(self, config: dict[str, Any]) -> Result:
        """The script's outcome through `wait_remote_exec_operation`, shaped like upstream's."""
        status, result = self.wait_remote_exec_operation(config)
        view = result.get("properties", {}).get("instanceView") if result else None
        if not isinstance(view, Mapping):
            return status, result
        return self._shape(status, result)

    def _shape(self, status: Status, result: Mapping[str, Any]) -> Result:
        view = result.get("properties", {}).get("instanceView", {})
        if not view:
            return status, {}
        exit_code = view.get("exitCode")
        ok = view.get("executionState") == "Succeeded" and exit_code == 0
        out, err = str(view.get("output") or ""), str(view.get("error") or "")
        lines = self.settings.output_lines
        lines = self.OUTPUT_AS_LINES if lines is None else lines
        shaped: dict[str, Any] = {
            "stdout": out.strip().split("\n") if lines else out,
            "stderr": err.strip().split("\n") if lines else err,
            "exitCode": exit_code,
            "startTimestamp": _timestamp(view.get("startTime")),
            "endTimestamp": _timestamp(view.get("endTime")),
        }
        return (Status.SUCCEEDED if ok else Status.FAILED), shaped


def _instance_view(info: Mapping[str, Any]) -> dict[str, Any]:
    """An operation's recorded output in the shape of a Run Command's instance view."""
    if "executionState" not in info and "exitCode" not in info:
        return {}
    view = {
        "output": info.get("stdout", ""),
        "error": info.get("stderr", ""),
        "exitCode": info.get("exitCode"),
        "executionState": info.get("executionState")
        or ("Succeeded" if info.get("exitCode") == 0 else "Failed"),
        "startTime": info.get("startTime"),
        "endTime": info.get("endTime"),
    }
    return {"properties": {"instanceView": view}, "operation": info.get("operation")}


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
