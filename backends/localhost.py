"""This machine as a host: power commands have nothing to do, remote execution runs here.

A minimal host for mlos_bench's local runs. Host commands complete at once (the command and its
outcome are both recorded). A script runs as a script (`backends.scripts`: one file run by
bash or the configured shell, the environment parameters as environment variables); it runs
inside the operation's `start` command, so the operation goes PENDING -> RUNNING ->
SUCCEEDED/FAILED in one call.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from backends.base import HOST_COMMAND_OUTCOMES, Backend, CommandFailed, CommandResult
from backends.hostctl import Found
from backends.scripts import environment, resolve_shell, run_script
from fsm import Entity
from fsm.observation import FailureKind, Observation

#: the observation each host command's effect amounts to, here and now
OUTCOME = HOST_COMMAND_OUTCOMES
SETTINGS = ("timeout", "cwd", "shell", "abort_on_error", "temp_dir")


class LocalHostBackend(Backend):
    name = "localhost"
    lifecycles = frozenset({"host", "operation"})
    host_operations = False
    starts_operations = True

    def __init__(
        self,
        *,
        timeout: float = 3600.0,
        cwd: str | None = None,
        shell: str = "bash",
        abort_on_error: bool = False,
        temp_dir: str | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.cwd = cwd
        self.shell = resolve_shell(shell)
        self.abort_on_error = bool(abort_on_error)
        self.temp_dir = temp_dir

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LocalHostBackend:
        unknown = set(config) - {"kind", "lifecycles", *SETTINGS}
        if unknown:
            raise ValueError(f"unknown localhost backend settings: {sorted(unknown)}")
        return cls(**{k: v for k, v in config.items() if k in SETTINGS})

    def lookup_host(self, data: Mapping[str, Any]) -> Found:
        """This machine exists and runs (it is running this code)."""
        return Found("RUNNING", {"hostname": socket.gethostname()})

    def observe(self, entities: Sequence[Entity], now: datetime) -> list[Observation]:
        """Nothing changes here behind the engine's back: every observation is empty."""
        return [
            Observation(e.id, (), None, None, now)
            if e.lifecycle in self.lifecycles
            else Observation.failed(e.id, FailureKind.MISSING, f"localhost drives no {e.lifecycle}")
            for e in entities
        ]

    def execute(
        self, entity: Entity, command: str, arguments: Mapping[str, Any], now: datetime
    ) -> CommandResult:
        if entity.lifecycle == "host" and command in OUTCOME:
            return CommandResult(events=(command, OUTCOME[command]))
        if entity.lifecycle == "operation" and command == "start":
            return self._run(entity, arguments)
        raise CommandFailed(command, entity.id, f"localhost has no {command!r}")

    def _run(self, op: Entity, arguments: Mapping[str, Any]) -> CommandResult:
        script = arguments.get("script")
        if not isinstance(script, list) or not all(isinstance(s, str) for s in script):
            raise CommandFailed("start", op.id, "the script must be a list of lines")
        secrets = arguments.get("secrets") or {}
        if not isinstance(secrets, Mapping):
            raise CommandFailed("start", op.id, "the environment must be a mapping")
        try:
            env = environment(secrets)
        except ValueError as exc:
            raise CommandFailed("start", op.id, str(exc)) from exc
        run = run_script(
            script,
            env,
            shell=self.shell,
            cwd=self.cwd,
            timeout=self.timeout,
            abort_on_error=self.abort_on_error,
            temp_dir=self.temp_dir,
        )
        outcome = "succeed" if run.exit_code == 0 else "fail"
        payload = {"environment": sorted(str(k) for k in secrets), "exit_code": run.exit_code}
        return CommandResult(data=run.to_data(), events=("start", outcome), payload=payload)
