"""`SimHostService`: the same services over the deterministic simulator (no cloud).

A dry run of an Azure set-up: it accepts every key of upstream's Azure VM, SSH host and local
exec service configs (the cloud and connection ones are ignored, and logged), simulates the
hosts, and runs the scripts for real — as shell scripts on this machine, the environment
parameters as environment variables — so a config's scripts and result parsing are exercised
before any VM is paid for. Each simulated host has a home directory on this machine (under
`temp_dir`), where its scripts run one after the other, as an SSH host's run in the user's
home: what a setup script leaves there, the run script finds. It is removed when the host is
deprovisioned.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from backends.base import Backend, CommandFailed, CommandResult
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
        if entity.lifecycle == "host" and command == "deprovision":
            self._remove_home(entity.id)  # the host's disk goes with it
        if entity.lifecycle != "operation" or entity.data.get("command") != EXEC:
            return super().execute(entity, command, arguments, now)
        if self._operation_fails(entity.id):  # an injected failure: the script never ran
            data = {"stderr": "sim: injected failure", "exit_code": None}
            return CommandResult(data=data, events=("start", "fail"))
        if entity.parent_id is None:
            raise CommandFailed(command, entity.id, "a simulated script runs on a host")
        run = self._run(entity.parent_id, arguments)
        events = ("start", "succeed" if run.exit_code == 0 else "fail")
        payload = {"environment": sorted(str(k) for k in arguments.get("secrets") or {})}
        return CommandResult(data=run.to_data(), events=events, payload=payload)

    def home(self, host_id: str) -> Path:
        """Where the simulated host's scripts run (named by a digest of its entity id)."""
        digest = hashlib.sha256(f"{self.seed}:{host_id}".encode()).hexdigest()[:20]
        return Path(self.temp_dir or tempfile.gettempdir()) / f"fsm-sim-host-{digest}"

    def _home_for(self, host_id: str) -> Path:
        """The host's home, made private on first use; never a link or someone else's."""
        home = self.home(host_id)
        try:
            os.mkdir(home, 0o700)
        except FileExistsError:
            found = os.lstat(home)
            if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
                raise CommandFailed(
                    "start", host_id, f"{home} is not a directory of ours"
                ) from None
        return home

    def _remove_home(self, host_id: str) -> None:
        home = self.home(host_id)
        try:
            found = os.lstat(home)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(found.st_mode) and found.st_uid == os.geteuid():
            shutil.rmtree(home, ignore_errors=True)

    def _run(self, host_id: str, arguments: Mapping[str, Any]) -> ScriptRun:
        script = [str(line) for line in arguments.get("script") or []]
        env = environment(dict(arguments.get("secrets") or {}))
        return run_script(
            script,
            env,
            shell=self.shell,
            cwd=str(self._home_for(host_id)),
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
        """Named as upstream names hosts: `vmName` (Azure), `hostName`, `ssh_hostname` (SSH)."""
        name = (
            self._param(params, "vmName")
            or self._param(params, "hostName")
            or self._param(params, "ssh_hostname")
            or "sim-host"
        )
        return f"sim:{name}"

    def host_home(self, params: Mapping[str, Any]) -> Path | None:
        """The home directory of the simulated host `params` name (None: never provisioned)."""
        host = self.hosts.current_host(self._host_key(params))
        backend = self.hosts.backend
        if host is None or not isinstance(backend, SimExecBackend):
            return None
        return backend.home(host.id)

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
