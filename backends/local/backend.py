"""Services as local processes: the embedded default backend (no cluster, no cloud).

`submit` starts the service (an argv list, never a shell string) in its own session through the
exit-code shim and keeps the backend's own record of it in the private state directory; the
record, never the entity's data, says which process is ours (see `backends.local.process`).
`observe` checks that process and pings its health check; `stop` and `release` send SIGTERM to
its group, then SIGKILL after a grace period, and return only once nothing of ours is left.
A process that ends without being stopped has failed, whatever its exit code.

Environment values given to `submit` go to the process and nowhere else: neither the entity's
data, nor the transition's payload, nor the backend's record keep them.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from backends.base import Backend, CommandFailed, CommandResult
from backends.local import shim as shim_module
from backends.local.health import free_port, http_ok, tcp_ok
from backends.local.process import (
    KILL_WAIT,
    NONCE_VAR,
    ProcessRef,
    StillRunning,
    boot_id,
    find_by_nonce,
    leader_alive,
    start_ticks,
    terminate,
)
from backends.local.settings import LocalSettings
from backends.local.spec import SpecError, public_spec, validate_spec
from backends.local.state import StateDir, StateDirError, entity_key
from fsm import Entity
from fsm.observation import FailureKind, Observation
from fsm.redaction import redact

#: states in which a service may be started: nothing of it runs yet
STARTABLE = frozenset({"SUBMITTED", "PENDING"})


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
        config: dict[str, Any] = {"grace": grace, "ping_timeout": ping_timeout, "host": host}
        if state_dir is not None:
            config["state_dir"] = str(state_dir)
        settings = LocalSettings.from_config(config)
        self.state_dir = settings.state_dir
        self.grace = settings.grace
        # a stop or a release waits `grace` for SIGTERM, then up to KILL_WAIT after SIGKILL:
        # the worker bounds those calls (a little above that)
        self.command_timeout = self.release_timeout = self.grace + KILL_WAIT + 3.0
        self.ping_timeout = settings.ping_timeout
        self.host = settings.host
        self.files = StateDir(settings.state_dir)
        self._machine = (socket.gethostname(), boot_id())
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsm-ping")

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        """Refuse bad settings when the config is loaded, before anything starts."""
        LocalSettings.from_config(config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LocalProcessBackend:
        s = LocalSettings.from_config(config)
        return cls(s.state_dir, grace=s.grace, ping_timeout=s.ping_timeout, host=s.host)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.files.close()

    # -- the backend's own record of what it started ------------------------------------------

    def _record(self, entity: Entity) -> tuple[str, dict[str, Any] | None]:
        key = entity_key(entity.id, entity.created_at)
        record = self.files.read_json(f"{key}.json")
        if record is not None and record.get("entity_id") != entity.id:
            record = None  # not the record of this entity: never act on it
        return key, record

    def _elsewhere(self, entity: Entity, record: Mapping[str, Any], command: str) -> str | None:
        """Another machine's record (a state dir shared over the network): its processes are
        not ours to judge or signal from here. Raises for a command; tells `observe` where."""
        host, boot = record.get("host"), record.get("boot_id")
        if boot is None or boot == self._machine[1] or host == self._machine[0]:
            return None
        where = f"the service runs on {str(host)[:100]!r}, not on this machine"
        if command != "observe":
            raise CommandFailed(command, entity.id, f"{where}: a worker there must {command} it")
        return where

    def _ref(self, key: str, record: Mapping[str, Any]) -> ProcessRef | None:
        """Our shim as the record names it; after a submit that crashed before it recorded the
        pid, found again by its nonce. None after a reboot: nothing started before it lives."""
        nonce = record.get("nonce")
        if record.get("boot_id") not in (None, self._machine[1]):
            return None
        if not isinstance(nonce, str) or not nonce:
            return None
        pid, ticks = record.get("pid"), record.get("start_ticks")
        if isinstance(pid, int) and isinstance(ticks, int) and not isinstance(pid, bool):
            return ProcessRef(pid, ticks, nonce)
        found = find_by_nonce(nonce)
        if found is not None:
            self.files.write_json(
                f"{key}.json", {**record, "pid": found.pid, "start_ticks": found.start_ticks}
            )
        return found

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
        try:
            spec = validate_spec(arguments.get("process", entity.data.get("process")))
        except SpecError as exc:
            raise CommandFailed("submit", entity.id, str(exc)) from exc
        public = public_spec(spec)
        key, record = self._record(entity)
        if record is not None:
            self._elsewhere(entity, record, "submit")
            ref = self._ref(key, record)
            if ref is not None and leader_alive(ref):  # idempotent: it already runs
                return self._submitted(entity, key, record, ref, public)
        if entity.state not in STARTABLE:
            raise CommandFailed(
                "submit", entity.id, f"a service in state {entity.state} cannot be started"
            )
        port = spec["port"] or free_port(self.host)
        nonce = secrets.token_hex(16)
        record = {
            "entity_id": entity.id,
            "host": self._machine[0],
            "boot_id": self._machine[1],
            "nonce": nonce,
            "port": port,
            "health": spec["health"],
            "submitted_at": now.isoformat(),
        }
        self.files.remove(f"{key}.status")
        self.files.write_json(f"{key}.json", record)  # before the start: a crash can find it
        ref = self._start(entity, key, spec, port, nonce)
        record.update(pid=ref.pid, start_ticks=ref.start_ticks)
        self.files.write_json(f"{key}.json", record)
        return self._submitted(entity, key, record, ref, public)

    def _start(
        self, entity: Entity, key: str, spec: Mapping[str, Any], port: int, nonce: str
    ) -> ProcessRef:
        argv = [a.replace("{port}", str(port)) for a in spec["argv"]]
        env = {**_inherited_env(), **spec["env"], "PORT": str(port), NONCE_VAR: nonce}
        command = [sys.executable, "-I", shim_module.__file__, "--dir-fd", str(self.files.fd)]
        command += ["--status", f"{key}.status", "--", *argv]
        try:
            log = self.files.open_log(f"{key}.log")
        except (OSError, StateDirError) as exc:
            raise CommandFailed("submit", entity.id, f"cannot open its log: {exc}") from exc
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=spec["cwd"],
                env=env,
                start_new_session=True,
                pass_fds=(self.files.fd,),
            )
        except OSError as exc:
            self.files.remove(f"{key}.json")
            raise CommandFailed("submit", entity.id, f"cannot start: {exc.strerror}") from exc
        finally:
            os.close(log)
        ticks = start_ticks(proc.pid)
        if ticks is None:
            raise CommandFailed("submit", entity.id, "the process ended before it was seen")
        return ProcessRef(proc.pid, ticks, nonce)

    def _submitted(
        self,
        entity: Entity,
        key: str,
        record: Mapping[str, Any],
        ref: ProcessRef,
        public: Mapping[str, Any],
    ) -> CommandResult:
        """What the history shows: for people to read, never what the backend acts on."""
        data = {
            "process": public,
            "pid": ref.pid,
            "port": record.get("port"),
            "log": str(self.state_dir / f"{key}.log"),
            "started_at": record.get("submitted_at"),
        }
        return CommandResult(
            data=redact(data), events=("job_running",), payload={"process": redact(public)}
        )

    def _stop(self, entity: Entity, now: datetime) -> CommandResult:
        key, record = self._record(entity)
        if record is not None:
            self._elsewhere(entity, record, "stop")
        ref = self._ref(key, record) if record is not None else None
        killed = self._end(entity, "stop", ref)
        if record is not None:
            self.files.write_json(f"{key}.json", {**record, "stopped_at": now.isoformat()})
        return CommandResult(data={"stopped_at": now.isoformat(), "killed": killed})

    def release(self, entity: Entity, now: datetime) -> None:
        """A service that ended (failed, timed out, stopped) may still run: end what is ours.

        Returns only once nothing of ours is left (then its record goes); raises
        `CommandFailed` otherwise, and the worker retries. Idempotent."""
        key, record = self._record(entity)
        if record is None:
            return  # we never started anything for it: nothing of ours to end
        self._elsewhere(entity, record, "release")
        self._end(entity, "release", self._ref(key, record))
        self.files.remove(f"{key}.json")
        self.files.remove(f"{key}.status")

    def _end(self, entity: Entity, command: str, ref: ProcessRef | None) -> bool:
        if ref is None:
            return False
        try:
            return terminate(ref, self.grace)
        except StillRunning as exc:
            raise CommandFailed(command, entity.id, str(exc)) from exc

    # -- observing ---------------------------------------------------------------------------

    def observe(self, entities: Sequence[Entity], now: datetime) -> list[Observation]:
        return list(self._pool.map(lambda e: self._observe_one(e, now), entities))

    def _observe_one(self, entity: Entity, now: datetime) -> Observation:
        key, record = self._record(entity)
        if record is None:
            if entity.state in STARTABLE:
                return Observation(entity.id, observed_at=now)  # not submitted yet
            # whatever the data says, this backend runs nothing for it
            payload = {"reason": "no process of this backend for this service"}
            return Observation(entity.id, ("job_failed",), payload, observed_at=now)
        where = self._elsewhere(entity, record, "observe")
        if where is not None:
            return Observation.failed(entity.id, FailureKind.MISSING, where)
        try:
            ref = self._ref(key, record)
        except OSError as exc:
            return Observation.failed(entity.id, FailureKind.ERROR, f"state dir: {exc}")
        if ref is not None and leader_alive(ref):
            ok = self._ping(record)
            return Observation(
                entity.id, ("job_running", "ping_ok" if ok else "ping_failed"), observed_at=now
            )
        code = _exit_code(self.files.read(f"{key}.status", limit=32))
        if "stopped_at" in record:
            return Observation(entity.id, ("job_cancelled",), {"exit_code": code}, observed_at=now)
        return Observation(entity.id, ("job_failed",), {"exit_code": code}, observed_at=now)

    def _ping(self, record: Mapping[str, Any]) -> bool:
        port, health = record.get("port"), record.get("health")
        if not isinstance(port, int) or not isinstance(health, Mapping):
            return False
        if isinstance(health.get("http"), str):
            return http_ok(self.host, port, health["http"], self.ping_timeout)
        return tcp_ok(self.host, port, self.ping_timeout)


#: the worker's own variables a service must not inherit: its database URL, and the secrets it
#: was given to resolve references with (`$FSM_SECRET_NAME`, `$FSM_SECRETS_DIR`)
_WORKER_ONLY = ("FSM_DB", "FSM_SECRET", NONCE_VAR)


def _inherited_env() -> dict[str, str]:
    """The worker's environment minus what is the worker's alone: a service gets the secrets
    its own spec names (resolved for it), never every secret the worker holds."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_WORKER_ONLY)}


def _exit_code(raw: bytes | None) -> int | None:
    """The code the shim recorded; None if it was killed before it could write one."""
    if raw is None:
        return None
    try:
        return int(raw.decode().strip())
    except ValueError:
        return None
