"""This machine as a host: power commands have nothing to do, remote execution runs here.

A minimal host for mlos_bench's local runs. Host commands complete at once (the command and its
outcome are both recorded). A script runs line by line as argument lists (`shlex.split`, no
shell), with the environment parameters added to the process environment, stopping at the
first line that fails; it runs inside the operation's `start` command, so the operation goes
PENDING -> RUNNING -> SUCCEEDED/FAILED in one call.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from backends.base import HOST_COMMAND_OUTCOMES, Backend, CommandFailed, CommandResult
from fsm import Entity
from fsm.observation import FailureKind, Observation

#: the observation each host command's effect amounts to, here and now
OUTCOME = HOST_COMMAND_OUTCOMES
MAX_OUTPUT = 64 * 1024


class LocalHostBackend(Backend):
    name = "localhost"
    lifecycles = frozenset({"host", "operation"})
    host_operations = False
    starts_operations = True

    def __init__(self, *, timeout: float = 3600.0, cwd: str | None = None) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.cwd = cwd

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LocalHostBackend:
        unknown = set(config) - {"kind", "lifecycles", "timeout", "cwd"}
        if unknown:
            raise ValueError(f"unknown localhost backend settings: {sorted(unknown)}")
        return cls(**{k: v for k, v in config.items() if k in ("timeout", "cwd")})

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
        env = {**os.environ, **{str(k): "" if v is None else str(v) for k, v in secrets.items()}}
        stdout, stderr, code = run_lines(script, env, cwd=self.cwd, timeout=self.timeout)
        data = {"stdout": stdout[:MAX_OUTPUT], "stderr": stderr[:MAX_OUTPUT], "exit_code": code}
        outcome = "succeed" if code == 0 else "fail"
        payload = {"environment": sorted(str(k) for k in secrets), "exit_code": code}
        return CommandResult(data=data, events=("start", outcome), payload=payload)


def run_lines(
    lines: Sequence[str], env: Mapping[str, str], *, cwd: str | None, timeout: float
) -> tuple[str, str, int | None]:
    """Run each non-empty, non-comment line as an argv list; stop at the first failure."""
    out: list[str] = []
    err: list[str] = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            argv = shlex.split(line)
            done = subprocess.run(
                argv,
                env=dict(env),
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except ValueError as exc:  # unbalanced quotes
            err.append(f"{line!r}: {exc}\n")
            return "".join(out), "".join(err), 2
        except FileNotFoundError:
            err.append(f"{argv[0]}: command not found\n")
            return "".join(out), "".join(err), 127
        except subprocess.TimeoutExpired:
            err.append(f"{argv[0]}: timed out after {timeout:g}s\n")
            return "".join(out), "".join(err), None
        out.append(done.stdout)
        err.append(done.stderr)
        if done.returncode != 0:
            return "".join(out), "".join(err), done.returncode
    return "".join(out), "".join(err), 0
