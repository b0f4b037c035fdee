"""`SlurmBackend`: services run as Slurm batch jobs, observed with one `squeue` per cycle.

A job is ours only when identity proves it (backends.slurm.identity): our tag in its name, our
user, the submit time we bound. Observing is `backends.slurm.observe`; here are the commands:
- `submit`: one `squeue --me --name=<the entity's job name>` (bounded to that one name: it finds
  the job a crashed submit left, so a retry never starts a second one), then `sbatch`;
- `stop` (and `job_cancelled` / `job_timeout` / `job_failed` as commands): confirm the job is
  ours and `scancel` it with its exact name and our user as filters, in the same call;
- `release` (the worker's, after the service ended on its own): returns only once the job is
  confirmed gone (not listed, listed as ended, or listed as another's job), cancelling it if
  needed; raises when that cannot be confirmed (the worker retries); removes the port files.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from backends.base import Backend, CommandFailed, CommandResult
from backends.slurm.cluster import Cluster
from backends.slurm.identity import Identity, controller_time, load_key
from backends.slurm.observe import FINAL_PHASES, Observer, job_id_of
from backends.slurm.parse import JobRecord, ParseError
from backends.slurm.script import job_name, port_file, render_script
from backends.slurm.settings import SlurmSettings
from backends.slurm.states import phase_of
from backends.slurm.transport import (
    LocalTransport,
    Transport,
    TransportError,
    Tunnel,
    make_transport,
)
from backends.slurm.tunnels import Tunnels
from fsm import Entity
from fsm.observation import FailureKind, Observation

log = logging.getLogger(__name__)

#: commands that end the service: scancel the job, then record the event
STOP_COMMANDS = frozenset({"stop", "job_cancelled", "job_timeout", "job_failed"})
_MAX_RUNS = 50  # port files removed at release: runs 0..restarts, at most this many
#: our own budget is a little inside the worker's bound for the call (contract 2), so we end
#: the call with a clear timeout before the worker abandons it
_INSIDE = 0.9


class ReleaseNotConfirmed(RuntimeError):
    """The job may still hold its allocation; the worker retries `release` later."""


class SlurmBackend(Backend):
    """Services as Slurm jobs; see the module docstrings for what each call costs."""

    name = "slurm"
    lifecycles = frozenset({"service"})
    commands = frozenset({"submit"})
    releases = True

    def __init__(
        self,
        transport: Transport | None = None,
        settings: SlurmSettings | None = None,
        *,
        key: bytes | None = None,
        **options: Any,
    ) -> None:
        if settings is not None and options:
            raise ValueError("give settings or keyword options, not both")
        self.settings = settings or SlurmSettings(**options)
        self.transport = transport or LocalTransport()
        self.identity = Identity(key if key is not None else load_key(self.settings.key_file))
        self.cluster = Cluster(self.transport, self.settings)
        self.tunnels = Tunnels(self.transport)
        tunnel = self.transport.remote if self.settings.tunnel is None else self.settings.tunnel
        self.observer = Observer(self.cluster, self.identity, self.settings, self.tunnels, tunnel)
        self.observe_timeout = self.settings.observe_timeout
        self.command_timeout = self.settings.command_timeout
        self.release_timeout = self.settings.release_timeout
        self.cycle_calls = 0  # scheduler commands in the last observe

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SlurmBackend:
        """From the `fsm run --config` entry: `{kind: slurm, transport: {kind: ssh, ...}, ...}`."""
        transport = config.get("transport") or {"kind": "local"}
        if not isinstance(transport, Mapping):
            raise ValueError("transport must be a mapping with a 'kind' (local or ssh)")
        rest = {k: v for k, v in config.items() if k not in ("kind", "lifecycles", "transport")}
        return cls(make_transport(transport), SlurmSettings.from_config(rest))

    def close(self) -> None:
        self.transport.close()

    # -- what tests and benchmarks read ------------------------------------------------------

    @property
    def calls(self) -> Counter[str]:
        """Every command run, by name."""
        return self.cluster.calls

    @property
    def port_dir(self) -> str:
        return self.settings.port_dir

    @property
    def port_range(self) -> tuple[int, int]:
        return self.settings.port_range

    @property
    def accounting(self) -> bool | None:
        """Whether sacct answers (None: not asked yet)."""
        return self.cluster.accounting

    def scheduler_calls(self) -> int:
        """Scheduler commands run so far (squeue, sacct, scontrol, sbatch, scancel)."""
        return self.cluster.scheduler_calls()

    def tag(self, entity_id: str) -> str:
        return self.identity.tag(entity_id)

    # -- observing ---------------------------------------------------------------------------

    def observe(self, entities: Sequence[Entity], now: datetime) -> list[Observation]:
        before = self.scheduler_calls()
        try:
            with self.cluster.budget(self.observe_timeout * _INSIDE):
                return self.observer.observe(entities, now)
        finally:
            self.cycle_calls = self.scheduler_calls() - before

    def ping_first(self, entity: Entity, now: datetime) -> Observation | None:
        """Blackfish's documented refresh order: a good ping of the endpoint recorded for the
        current run is enough; None when there is none or it did not answer (ask the job)."""
        with self.cluster.budget(self.observe_timeout * _INSIDE):
            found = self.observer.ping_only([entity], now, (FailureKind.MISSING, "ping first"))
        return found[0] if found and found[0].failure is None else None

    def job_record(self, entity: Entity) -> JobRecord | None:
        """The entity's job as the scheduler reports it now, if it is ours; else None."""
        job = job_id_of(entity.data)
        if job is None:
            return None
        with self.cluster.budget(self.command_timeout * _INSIDE):
            uid = self.cluster.uid()
            record = self.cluster.squeue([job]).get(job)
            if record is not None and self.observer.owned(entity, record, uid):
                return record
            found = self.cluster.ended([job], entity.created_at) or []
        mine = [r for r in found if r.job_id == job and self.observer.owned(entity, r, uid)]
        return mine[-1] if mine else None

    # -- jobs --------------------------------------------------------------------------------

    def script(self, entity_id: str, arguments: Mapping[str, Any]) -> str:
        """The batch script for the entity; `ScriptError` lists every invalid option."""
        return render_script(
            arguments.get("job_options"),
            arguments.get("container_options"),
            tag=self.identity.tag(entity_id),
            port_dir=self.settings.port_dir,
            port_range=self.settings.port_range,
        )

    def _mine(
        self, entity_id: str, records: Sequence[JobRecord], not_before: str | None
    ) -> list[JobRecord]:
        uid = self.cluster.uid()
        return [r for r in records if self.identity.owns(entity_id, r, uid, not_before)]

    def submit_job(
        self, entity_id: str, arguments: Mapping[str, Any], created_at: datetime | None = None
    ) -> str:
        """sbatch the service's script (or find the job a crashed submit left); its job id.

        A job found by name is taken only if it was submitted after the entity was created
        (`created_at`, written by the engine): an entity id used again — a new database, a
        supervisor's attempt ids — must not adopt the old entity's job, still listed."""
        script = self.script(entity_id, arguments)
        raw = arguments.get("job_options") or {}
        base = str(raw.get("job_name", raw.get("job-name", "fsm-service")))
        name = job_name(base, self.identity.tag(entity_id))
        try:
            with self.cluster.budget(self.command_timeout * _INSIDE):
                found = self._mine(
                    entity_id, self.cluster.squeue_named([name]), controller_time(created_at)
                )
                if found:
                    job = max(found, key=lambda r: int(r.job_id)).job_id
                    log.info("slurm: %s already has job %s; not submitting again", entity_id, job)
                    return job
                return self.cluster.submit(script)
        except (TransportError, ParseError) as exc:
            raise CommandFailed("submit", entity_id, str(exc)) from exc

    def confirm_and_cancel(self, entity: Entity) -> JobRecord | None:
        """If the entity's job is still listed, ours and not ended: scancel it (filtered by
        its name and our user) and return its record; None when it is gone already."""
        job = job_id_of(entity.data)
        if job is None:
            return None
        record = self.cluster.squeue([job]).get(job)
        if record is None or not self.observer.owned(entity, record, self.cluster.uid()):
            return None  # not listed, or the id is another job's now: ours is gone
        if phase_of(record.state) in FINAL_PHASES:
            return None
        self.cluster.cancel(record)
        log.info("slurm: cancelled job %s of %s (%s)", job, entity.id, entity.state)
        return record

    def execute(
        self, entity: Entity, command: str, arguments: Mapping[str, Any], now: datetime
    ) -> CommandResult:
        """`submit` (sbatch; the job id recorded with `job_pending`: a submitted job is queued)
        and the commands that end a service (scancel, then the event of the same name)."""
        job = job_id_of(entity.data)
        if command == "submit":
            if job is not None:  # submitted already (a retry): nothing to do or record
                return CommandResult(events=(), payload={"job_id": job})
            if entity.state != "SUBMITTED":
                raise CommandFailed("submit", entity.id, f"a {entity.state} service is not new")
            job = self.submit_job(entity.id, arguments, entity.created_at)
            data = {"job_id": job, "submitted_at": now.isoformat()}
            return CommandResult(data=data, events=("job_pending",), payload={"job_id": job})
        if command in STOP_COMMANDS:
            try:
                with self.cluster.budget(self.command_timeout * _INSIDE):
                    self.confirm_and_cancel(entity)
            except (TransportError, ParseError) as exc:
                raise CommandFailed(command, entity.id, str(exc)) from exc
            data = self.tunnels.drop(entity)
            return CommandResult(data=data or None, events=(command,), payload={"job_id": job})
        raise CommandFailed(command, entity.id, f"the slurm backend has no {command!r}")

    # -- after the engine decided ------------------------------------------------------------

    def release(self, entity: Entity, now: datetime) -> None:
        """Contract 1: return only when the entity's job is confirmed gone; raise otherwise.

        Idempotent. A job this process saw end costs no call; otherwise one `squeue` says
        whether it is gone, and a job still ours and running is cancelled and waited for
        (within `release_timeout`). Port files of the job's runs are removed; tunnel closed."""
        job = job_id_of(entity.data)
        deadline = time.monotonic() + self.release_timeout * _INSIDE
        with self.cluster.budget(self.release_timeout * _INSIDE):
            if job is not None and job not in self.observer.ended_jobs:
                try:
                    while self.confirm_and_cancel(entity) is not None:
                        if time.monotonic() + 1 > deadline:
                            raise ReleaseNotConfirmed(f"job {job} of {entity.id} is still ending")
                        time.sleep(0.5)
                except (TransportError, ParseError) as exc:
                    raise ReleaseNotConfirmed(f"job {job} of {entity.id}: {exc}") from exc
            self._remove_port_files(entity, job)
        self.observer.ended_jobs.discard(job or "")
        self.tunnels.drop(entity)

    def _remove_port_files(self, entity: Entity, job: str | None) -> None:
        if job is None:
            return
        run = entity.data.get("run")
        last = run if isinstance(run, int) and not isinstance(run, bool) else 0
        tag = self.identity.tag(entity.id)
        files = [
            port_file(self.settings.port_dir, job, n, tag)
            for n in range(min(max(last, 0), _MAX_RUNS) + 1)
        ]
        try:
            self.cluster.remove(files + [f + ".tmp" for f in files])
        except TransportError as exc:  # stale files are keyed to this entity's runs only
            log.info("slurm: could not remove the port files of job %s: %s", job, exc)

    # -- tunnels (Blackfish's open_tunnel / close_tunnel) ------------------------------------

    def open_tunnel(self, entity: Entity) -> Tunnel | None:
        """A tunnel to the service (None when none is needed or its node/port are unknown)."""
        node = entity.data.get("node")
        port = entity.data.get("port")
        if not self.observer.tunnel or not isinstance(node, str) or not isinstance(port, int):
            return None
        return self.tunnels.for_entity(entity, self.settings.ping_address(node), port)

    def close_tunnel(self, entity: Entity) -> None:
        self.tunnels.drop(entity)
