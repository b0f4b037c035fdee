"""`SimHostService`: the same services over the deterministic simulator (no cloud).

A dry run of an Azure set-up: it accepts every key of upstream's Azure VM, SSH host and local
exec service configs (the cloud and connection ones are ignored, and logged), simulates the
hosts, and runs the scripts for real — as shell scripts in a scratch directory on this
machine, the environment parameters as environment variables — so a config's scripts and
result parsing are exercised before any VM is paid for.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from backends.base import Backend, CommandResult
from backends.hostctl import EXEC
from backends.mlos.service import EngineHostService
from backends.mlos.settings import positive
from backends.scripts import ScriptRun, environment, run_script
from backends.sim import SimBackend
from fsm import Entity

_CLOUD = "the simulator makes no requests to a cloud"
_NO_SSH = "the simulator runs scripts on this machine: no SSH connection is made"
_UPSTREAM_IGNORED = {
    "subscription": _CLOUD,
    "resourceGroup": _CLOUD,
    "location": _CLOUD,
    "deploymentTemplatePath": _CLOUD,
    "deploymentTemplateParameters": _CLOUD,
    "customDataFile": _CLOUD,
    "vmSpec": _CLOUD,
    "requestTimeout": _CLOUD,
    "requestTotalRetries": _CLOUD,
    "requestBackoffFactor": _CLOUD,
    "ssh_username": _NO_SSH,
    "ssh_port": _NO_SSH,
    "ssh_priv_key_path": _NO_SSH,
    "ssh_known_hosts_path": _NO_SSH,
    "ssh_keepalive_interval": _NO_SSH,
    "ssh_request_timeout": _NO_SSH,
}


class SimExecBackend(SimBackend):
    """The simulator, with remote executions that really run their script."""

    starts_operations = True

    def __init__(
        self, seed: int, *, shell: str, abort_on_error: bool, temp_dir: str | None, **sim: Any
    ) -> None:
        super().__init__(seed, **sim)
        self.shell = shell
        self.abort_on_error = abort_on_error
        self.temp_dir = temp_dir

    def execute(
        self, entity: Entity, command: str, arguments: Mapping[str, Any], now: datetime
    ) -> CommandResult:
        if entity.lifecycle != "operation" or entity.data.get("command") != EXEC:
            return super().execute(entity, command, arguments, now)
        if self._operation_fails(entity.id):  # an injected failure: the script never ran
            data = {"stderr": "sim: injected failure", "exit_code": None}
            return CommandResult(data=data, events=("start", "fail"))
        run = self._run(arguments)
        events = ("start", "succeed" if run.exit_code == 0 else "fail")
        payload = {"environment": sorted(str(k) for k in arguments.get("secrets") or {})}
        return CommandResult(data=run.to_data(), events=events, payload=payload)

    def _run(self, arguments: Mapping[str, Any]) -> ScriptRun:
        script = [str(line) for line in arguments.get("script") or []]
        env = environment(dict(arguments.get("secrets") or {}))
        with tempfile.TemporaryDirectory(prefix="fsm-sim-", dir=self.temp_dir) as scratch:
            return run_script(
                script,
                env,
                shell=self.shell,
                cwd=scratch,
                abort_on_error=self.abort_on_error,
                temp_dir=self.temp_dir,
            )


class SimHostService(EngineHostService):
    """Simulated hosts: commands take `operationSeconds` (times `timeScale`); a remote
    execution fails with `operationFailureRate` (default 0) without running, else runs its
    script with bash (or `ssh_shell`)."""

    KEYS = frozenset(
        {
            "seed",
            "timeScale",
            "operationSeconds",
            "hostFailureRate",
            "operationFailureRate",
            "ssh_shell",
            "temp_dir",
            "abort_on_error",
        }
    )
    IGNORED = _UPSTREAM_IGNORED
    START_PROVISIONS = True

    def _make_backend(self) -> Backend:
        config = self.config
        abort = config.get("abort_on_error", False)
        if not isinstance(abort, bool):
            raise ValueError(f"abort_on_error must be true or false, got {abort!r}")
        temp_dir = config.get("temp_dir")
        return SimExecBackend(
            int(config.get("seed", 0)),
            shell=str(config.get("ssh_shell") or "bash"),
            abort_on_error=abort,
            temp_dir=str(temp_dir) if temp_dir else None,
            time_scale=positive(config.get("timeScale"), "timeScale", 1.0),
            operation_seconds=positive(config.get("operationSeconds"), "operationSeconds", 2.0),
            host_failure_rate=float(config.get("hostFailureRate", 0.0)),
            operation_failure_rate=float(config.get("operationFailureRate", 0.0)),
        )

    def _host_key(self, params: Mapping[str, Any]) -> str:
        name = self._param(params, "vmName") or self._param(params, "hostName") or "sim-host"
        return f"sim:{name}"

    def _exec_refusal(self, host: Entity | None, config: Mapping[str, Any]) -> str | None:
        """A simulated host that does not exist or is not running cannot run a script."""
        if host is None:
            return f"{self._host_key(config)} was never provisioned (or is deprovisioned)"
        if host.state != "RUNNING":
            return f"{host.id} is {host.state}, not RUNNING"
        return None

    def _exec_data(self, config: Mapping[str, Any]) -> dict[str, Any]:
        name = config.get("commandName")
        return {"name": name} if isinstance(name, str) else {}
