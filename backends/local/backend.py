"""Services as local processes: the embedded default backend (no cluster, no cloud).

`submit` starts the service (an argv list, never a shell string) in its own session through the
exit-code shim; `observe` checks that the recorded process (pid + start time) still lives and
pings its health check; `stop` sends SIGTERM to the group, then SIGKILL after a grace period.
A process that ends without being stopped has failed, whatever its exit code.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from backends.base import Backend, CommandFailed, CommandResult
from backends.local.health import free_port, http_ok, tcp_ok
from backends.local.process import ProcessRef, identify, is_alive, terminate
from fsm import Entity
from fsm.observation import FailureKind, Observation

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH = re.compile(r"^/[^\0]*$")


class SpecError(ValueError):
    """A process spec that cannot be started safely; lists every problem."""


def validate_spec(raw: Any) -> dict[str, Any]:
    """Check a process spec: {argv: [str], env: {NAME: str}, cwd: str, health: {...}, port}."""
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise SpecError("the process spec must be a mapping with at least 'argv'")
    argv = raw.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        problems.append("argv must be a non-empty list of strings (no shell string)")
    elif any("\0" in a for a in argv):
        problems.append("argv must not contain NUL characters")
    env = raw.get("env", {})
    if not isinstance(env, Mapping) or not all(
        isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str) and "\0" not in v
        for k, v in env.items()
    ):
        problems.append("env must map identifier-like names to strings")
    cwd = raw.get("cwd")
    if cwd is not None and not (isinstance(cwd, str) and _PATH.match(cwd)):
        problems.append("cwd must be an absolute path")
    health = raw.get("health", {"tcp": True})
    if not isinstance(health, Mapping) or not (
        (isinstance(health.get("http"), str) and health["http"].startswith("/"))
        or health.get("tcp") is True
    ):
        problems.append("health must be {http: '/path'} or {tcp: true}")
    port = raw.get("port")
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        problems.append("port must be a TCP port number, or absent to pick a free one")
    unknown = set(raw) - {"argv", "env", "cwd", "health", "port"}
    if unknown:
        problems.append(f"unknown keys: {sorted(unknown)}")
    if problems:
        raise SpecError("; ".join(problems))
    return {
        "argv": list(argv or []),
        "env": dict(env),
        "cwd": cwd,
        "health": dict(health),
        "port": port,
    }


class LocalProcessBackend(Backend):
    """Runs and watches services as processes on this machine."""

    name = "local"
    lifecycles = frozenset({"service"})
    commands = frozenset({"submit"})
    releases = True

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        grace: float = 5.0,
        ping_timeout: float = 1.0,
        host: str = "127.0.0.1",
    ) -> None:
        base = Path(state_dir) if state_dir else Path.home() / ".cache" / "fsm" / "local"
        self.state_dir = base
        self.grace = grace
        self.ping_timeout = ping_timeout
        self.host = host
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsm-ping")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LocalProcessBackend:
        allowed = {"state_dir", "grace", "ping_timeout", "host"}
        unknown = set(config) - allowed - {"kind", "lifecycles"}
        if unknown:
            raise ValueError(f"unknown local backend settings: {sorted(unknown)}")
        return cls(**{k: v for k, v in config.items() if k in allowed})

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _files(self, entity_id: str) -> tuple[Path, Path]:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", entity_id)[:60]
        tag = hashlib.sha256(entity_id.encode()).hexdigest()[:8]
        return self.state_dir / f"{safe}-{tag}.log", self.state_dir / f"{safe}-{tag}.status"

    # -- commands ----------------------------------------------------------------------------

    def execute(
        self, entity: Entity, command: str, arguments: Mapping[str, Any], now: datetime
    ) -> CommandResult:
        if command == "submit":
            return self._submit(entity, arguments, now)
        if command == "stop":
            return self._stop(entity, now)
        return super().execute(entity, command, arguments, now)

    def _submit(self, entity: Entity, arguments: Mapping[str, Any], now: datetime) -> CommandResult:
        if isinstance(entity.data.get("pid"), int):  # idempotent: already started
            return CommandResult(events=("job_running",))
        try:
            spec = validate_spec(arguments.get("process", entity.data.get("process")))
        except SpecError as exc:
            raise CommandFailed("submit", entity.id, str(exc)) from exc
        port = spec["port"] or free_port(self.host)
        argv = [a.replace("{port}", str(port)) for a in spec["argv"]]
        log, status = self._files(entity.id)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        status.unlink(missing_ok=True)
        env = {**os.environ, **spec["env"], "PORT": str(port)}
        with log.open("ab") as out:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "backends.local.shim", str(status), "--", *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=spec["cwd"],
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise CommandFailed("submit", entity.id, f"cannot start: {exc}") from exc
        ref = identify(proc.pid)
        if ref is None:
            raise CommandFailed("submit", entity.id, "the process ended before it was seen")
        data = {
            "process": spec,
            "pid": ref.pid,
            "start_ticks": ref.start_ticks,
            "port": port,
            "log": str(log),
            "status_file": str(status),
            "started_at": now.isoformat(),
        }
        return CommandResult(data=data, events=("job_running",))

    def _stop(self, entity: Entity, now: datetime) -> CommandResult:
        ref = _ref(entity)
        killed = terminate(ref, self.grace) if ref is not None else False
        return CommandResult(data={"stopped_at": now.isoformat(), "killed": killed})

    def release(self, entity: Entity, now: datetime) -> None:
        """A service that failed or timed out may still run (e.g. it never answered): end it."""
        ref = _ref(entity)
        if ref is not None:
            terminate(ref, self.grace)

    # -- observing ---------------------------------------------------------------------------

    def observe(self, entities: Sequence[Entity], now: datetime) -> list[Observation]:
        return list(self._pool.map(lambda e: self._observe_one(e, now), entities))

    def _observe_one(self, entity: Entity, now: datetime) -> Observation:
        ref = _ref(entity)
        if ref is None:
            if "pid" in entity.data:
                return Observation.failed(entity.id, FailureKind.GARBAGE, "bad pid in data")
            return Observation(entity.id, observed_at=now)  # not submitted yet
        if is_alive(ref):
            ok = self._ping(entity)
            return Observation(
                entity.id, ("job_running", "ping_ok" if ok else "ping_failed"), observed_at=now
            )
        code = _exit_code(entity.data.get("status_file"))
        return Observation(entity.id, ("job_failed",), {"exit_code": code}, observed_at=now)

    def _ping(self, entity: Entity) -> bool:
        port = entity.data.get("port")
        health = entity.data.get("process", {}).get("health", {"tcp": True})
        if not isinstance(port, int):
            return False
        if isinstance(health.get("http"), str):
            return http_ok(self.host, port, health["http"], self.ping_timeout)
        return tcp_ok(self.host, port, self.ping_timeout)


def _ref(entity: Entity) -> ProcessRef | None:
    pid, ticks = entity.data.get("pid"), entity.data.get("start_ticks")
    if isinstance(pid, int) and isinstance(ticks, int) and pid > 0:
        return ProcessRef(pid, ticks)
    return None


def _exit_code(path: Any) -> int | None:
    """The code the shim recorded; None if it was killed before it could write one."""
    if not isinstance(path, str):
        return None
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
