"""`SlurmBackend`: services run as Slurm batch jobs, observed with one `squeue` per cycle.

Observe, for a whole batch of services:
1. one `squeue -h -t all -j ID,ID,...` (finished jobs stay listed for MinJobAge, 300 s);
2. for the jobs it no longer lists, at most one more call: `sacct -S <earliest submit - 1 day>`
   when accounting is on (found out on first use, or set in the config), else
   `scontrol show job -o`; a job neither knows is "ended, cause unknown": FAILED once it was
   submitted more than `lost_after` seconds ago (a service is not meant to end), and no change
   before that;
3. for running jobs: the port each job wrote (one `grep` over the port files, only when the
   port is not known yet or the job restarted), then one health ping per job, in parallel,
   through an SSH tunnel per job when the cluster is remote (re-opened when it died).
A command that fails or prints what we cannot parse fails the observation: no state changes.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from backends.base import Backend, CommandFailed, CommandResult
from backends.slurm.health import Target, ping_all
from backends.slurm.parse import (
    SACCT_FORMAT,
    SQUEUE_FORMAT,
    JobRecord,
    ParseError,
    parse_ports,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
)
from backends.slurm.script import DEFAULT_PORT_DIR, render_script
from backends.slurm.states import Phase, events_for, phase_of
from backends.slurm.transport import (
    CommandOutput,
    LocalTransport,
    Transport,
    TransportError,
    Tunnel,
    make_transport,
)
from fsm import Entity
from fsm.observation import FailureKind, Observation

log = logging.getLogger(__name__)

SCHEDULER_COMMANDS = frozenset({"squeue", "sacct", "scontrol", "sbatch", "scancel"})
#: commands that end the service: scancel the job, then record the event
STOP_COMMANDS = frozenset({"stop", "job_cancelled", "job_timeout", "job_failed"})
#: events by which the service, not Slurm, ended a job that may still be running
_OUR_DECISIONS = frozenset({"ping_failed", "time_limit"})
_JOB_ID = re.compile(r"\d{1,12}")
_HEALTH_PATH = re.compile(r"/[A-Za-z0-9_.~!$&'()*+,;=:@%/?\-]{0,500}")
_GONE = ("Invalid job id", "already completing or completed", "Job has finished")


def job_tag(entity_id: str) -> str:
    """The `--comment` that ties a job to its entity, so a retried submit finds the job."""
    return "fsm-" + hashlib.sha256(entity_id.encode()).hexdigest()[:24]


def job_id_of(data: Mapping[str, Any]) -> str | None:
    """The job id recorded in an entity's data, if it is one (data is free-form JSON)."""
    value = data.get("job_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and _JOB_ID.fullmatch(value) else None


def _submitted_at(data: Mapping[str, Any], fallback: datetime) -> datetime:
    value = data.get("submitted_at")
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    return parsed if parsed is not None and parsed.tzinfo is not None else fallback


class _Lookup:
    """What one observe cycle learned about the jobs, and why it could not learn more."""

    def __init__(self) -> None:
        self.records: dict[str, JobRecord] = {}
        self.failed: dict[str, tuple[FailureKind, str]] = {}  # job id -> why unknown
        self.ports: dict[str, int | None] = {}  # job id -> port (None: not reported yet)


class SlurmBackend(Backend):
    """Services as Slurm jobs; see the module docstring for what one observe costs."""

    name = "slurm"
    lifecycles = frozenset({"service"})
    commands = frozenset({"submit"})
    releases = True

    def __init__(
        self,
        transport: Transport | None = None,
        *,
        health_path: str | None = "/",
        health_timeout: float = 2.0,
        accounting: bool | None = None,
        port_dir: str = DEFAULT_PORT_DIR,
        port_range: tuple[int, int] = (20000, 40000),
        ping_host: str | None = None,
        lost_after: float = 120.0,
        tunnel: bool | None = None,
    ) -> None:
        if health_path is not None and not _HEALTH_PATH.fullmatch(health_path):
            raise ValueError(f"health_path must be an absolute URL path, got {health_path!r}")
        if health_timeout <= 0 or lost_after < 0:
            raise ValueError("health_timeout must be positive and lost_after not negative")
        self.transport = transport or LocalTransport()
        self.health_path = health_path
        self.health_timeout = health_timeout
        self.accounting = accounting  # None: find out on first use
        self.port_dir = port_dir.rstrip("/") or "/"
        self.port_range = port_range
        self.ping_host = ping_host
        self.lost_after = timedelta(seconds=lost_after)
        self.tunnel = self.transport.remote if tunnel is None else tunnel
        self._tunnels: dict[str, Tunnel] = {}  # entity id -> tunnel opened by this process
        self._ended_jobs: set[str] = set()  # seen ended by Slurm: `release` need not scancel
        self.calls: Counter[str] = Counter()  # every command run, by name
        self.cycle_calls = 0  # scheduler commands in the last observe

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SlurmBackend:
        """From the `fsm run --config` entry: `{kind: slurm, transport: {kind: ssh, ...}, ...}`."""
        allowed = {
            "health_path",
            "health_timeout",
            "accounting",
            "port_dir",
            "port_range",
            "ping_host",
            "lost_after",
            "tunnel",
        }
        unknown = set(config) - allowed - {"kind", "lifecycles", "transport"}
        if unknown:
            raise ValueError(f"unknown slurm backend settings: {sorted(unknown)}")
        transport = config.get("transport") or {"kind": "local"}
        if not isinstance(transport, Mapping):
            raise ValueError("transport must be a mapping with a 'kind' (local or ssh)")
        options = {k: v for k, v in config.items() if k in allowed}
        if "port_range" in options:
            low, high = options["port_range"]
            options["port_range"] = (int(low), int(high))
        return cls(make_transport(transport), **options)

    def close(self) -> None:
        self.transport.close()

    # -- calling the cluster -----------------------------------------------------------------

    def _call(
        self, argv: Sequence[str], *, input: str | None = None, ok: Sequence[int] = (0,)
    ) -> CommandOutput:
        self.calls[argv[0]] += 1
        return self.transport.run(argv, input=input, ok=ok)

    def squeue(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """One `squeue` for all `job_ids`: what the controller still knows of them."""
        argv = ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", SQUEUE_FORMAT]
        out = self._call(argv, ok=(0, 1))
        if out.returncode != 0:
            if "Invalid job id" in out.stderr:  # squeue -j with a single unknown id
                return {}
            raise TransportError(argv, FailureKind.ERROR, f"exit 1: {out.stderr.strip()[:300]}")
        return parse_squeue(out.stdout)

    def ended(self, job_ids: Sequence[str], since: datetime) -> dict[str, JobRecord] | None:
        """One call for jobs squeue no longer lists; None when accounting just turned out off."""
        if self.accounting is not False:
            start = (since - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
            argv = ["sacct", "-P", "-n", "-X", "-j", ",".join(job_ids)]
            argv += ["-S", start, "-E", "now", "-o", SACCT_FORMAT]
            out = self._call(argv, ok=(0, 1))
            if out.returncode != 0:
                if "accounting storage is disabled" in out.stderr and self.accounting is None:
                    log.info("slurm: accounting is disabled; using scontrol from now on")
                    self.accounting = False
                    return None
                raise TransportError(argv, FailureKind.ERROR, out.stderr.strip()[:300])
            self.accounting = True
            return parse_sacct(out.stdout)
        argv = ["scontrol", "show", "job", "-o"]
        if len(job_ids) == 1:
            argv.append(job_ids[0])
        out = self._call(argv, ok=(0, 1))
        if out.returncode != 0:
            if "Invalid job id" in out.stderr:
                return {}
            raise TransportError(argv, FailureKind.ERROR, out.stderr.strip()[:300])
        wanted = set(job_ids)
        return {k: v for k, v in parse_scontrol(out.stdout).items() if k in wanted}

    def read_ports(self, job_ids: Sequence[str]) -> dict[str, int | None]:
        """The ports the jobs wrote, one `grep` for all; None for a job that wrote none yet."""
        paths = {self.transport.cluster_path(f"{self.port_dir}/{j}.port"): j for j in job_ids}
        out = self._call(["grep", "-s", "-H", "-E", "^[0-9]+$", "--", *paths], ok=(0, 1, 2))
        found: dict[str, int | None] = dict.fromkeys(job_ids)
        for path, port in parse_ports(out.stdout).items():
            if path in paths:
                found[paths[path]] = port
        return found

    # -- observing ---------------------------------------------------------------------------

    def observe(self, entities: Sequence[Entity], now: datetime) -> list[Observation]:
        before = self.scheduler_calls()
        try:
            return self._observe(entities, now)
        finally:
            self.cycle_calls = self.scheduler_calls() - before

    def scheduler_calls(self) -> int:
        """Scheduler commands run so far (squeue, sacct, scontrol, sbatch, scancel)."""
        return sum(n for name, n in self.calls.items() if name in SCHEDULER_COMMANDS)

    def _observe(self, entities: Sequence[Entity], now: datetime) -> list[Observation]:
        results: dict[str, Observation] = {}
        jobs: dict[str, str] = {}
        for entity in entities:
            job = job_id_of(entity.data)
            if job is None:
                results[entity.id] = Observation.failed(
                    entity.id, FailureKind.MISSING, "no job id recorded: not submitted yet"
                )
            else:
                jobs[entity.id] = job
        if not jobs:
            return list(results.values())
        lookup = _Lookup()
        try:
            lookup.records = self.squeue(sorted(set(jobs.values()), key=int))
        except (TransportError, ParseError) as exc:
            kind = exc.kind if isinstance(exc, TransportError) else FailureKind.GARBAGE
            return [*results.values(), *(Observation.failed(e, kind, str(exc)) for e in jobs)]
        self._look_for_ended(entities, jobs, lookup, now)
        self._find_ports(entities, jobs, lookup)
        running = [e for e in entities if e.id in jobs and self._running(lookup, jobs[e.id])]
        pings = self._ping(running, jobs, lookup)
        for entity in entities:
            if entity.id in jobs:
                results[entity.id] = self._observation(entity, jobs[entity.id], lookup, pings, now)
        return list(results.values())

    def _running(self, lookup: _Lookup, job: str) -> bool:
        record = lookup.records.get(job)
        return record is not None and phase_of(record.state) is Phase.RUNNING

    def _look_for_ended(
        self, entities: Sequence[Entity], jobs: Mapping[str, str], lookup: _Lookup, now: datetime
    ) -> None:
        vanished = {
            e.id: jobs[e.id] for e in entities if e.id in jobs and jobs[e.id] not in lookup.records
        }
        if not vanished:
            return
        since = min(_submitted_at(e.data, e.created_at) for e in entities if e.id in vanished)
        try:
            found = self.ended(sorted(set(vanished.values()), key=int), since)
        except (TransportError, ParseError) as exc:
            kind = exc.kind if isinstance(exc, TransportError) else FailureKind.GARBAGE
            lookup.failed.update(dict.fromkeys(vanished.values(), (kind, str(exc))))
            return
        if found is None:
            why = (FailureKind.MISSING, "not in squeue; accounting is off, asking scontrol next")
            lookup.failed.update(dict.fromkeys(vanished.values(), why))
            return
        lookup.records.update(found)

    def _find_ports(
        self, entities: Sequence[Entity], jobs: Mapping[str, str], lookup: _Lookup
    ) -> None:
        unknown: list[str] = []
        for entity in entities:
            job = jobs.get(entity.id)
            if job is None or not self._running(lookup, job):
                continue
            port = entity.data.get("port")
            same_run = entity.data.get("started_at") == lookup.records[job].start
            if isinstance(port, int) and same_run:
                lookup.ports[job] = port
            else:
                unknown.append(job)
        if not unknown:
            return
        try:
            lookup.ports.update(self.read_ports(sorted(set(unknown), key=int)))
        except TransportError as exc:
            lookup.failed.update(dict.fromkeys(unknown, (exc.kind, f"reading the port: {exc}")))

    def _ping(
        self, running: Sequence[Entity], jobs: Mapping[str, str], lookup: _Lookup
    ) -> dict[str, tuple[bool, str, Tunnel | None]]:
        """Ping every running service that reported a port; tunnels opened as needed."""
        targets: list[Target] = []
        owners: list[tuple[str, Tunnel | None]] = []
        results: dict[str, tuple[bool, str, Tunnel | None]] = {}
        for entity in running:
            job = jobs[entity.id]
            port = lookup.ports.get(job)
            node = self.ping_host or lookup.records[job].node
            if job in lookup.failed:
                continue
            if port is None or node is None:
                results[entity.id] = (False, "the job has not reported its port yet", None)
                continue
            if not self.tunnel:
                targets.append(Target(node, port))
                owners.append((entity.id, None))
                continue
            try:
                tunnel = self._tunnel_for(entity, node, port)
            except TransportError as exc:
                lookup.failed[job] = (exc.kind, str(exc))
                continue
            targets.append(Target("127.0.0.1", tunnel.local_port) if tunnel else Target(node, port))
            owners.append((entity.id, tunnel))
        for (entity_id, tunnel), (ok, detail) in zip(
            owners, ping_all(targets, self.health_path, self.health_timeout), strict=True
        ):
            results[entity_id] = (ok, detail, tunnel)
        return results

    def _tunnel_for(self, entity: Entity, node: str, port: int) -> Tunnel | None:
        """The entity's tunnel if it is alive and still points at node:port, else a new one.

        Looked for in this process's memory first (opened since the data was last written),
        then in the entity's data (opened by an earlier run: its pid and command line must
        still match, so a recycled pid is never taken for it)."""
        for old in (self._tunnels.get(entity.id), Tunnel.from_data(entity.data.get("tunnel"))):
            if old is None:
                continue
            if old.node == node and old.remote_port == port and self.transport.tunnel_alive(old):
                self._tunnels[entity.id] = old
                return old
            self.transport.close_tunnel(old)
            log.info("slurm: tunnel %s of %s is gone; opening a new one", old.spec(), entity.id)
        tunnel = self.transport.open_tunnel(node, port)
        if tunnel is not None:
            self._tunnels[entity.id] = tunnel
        return tunnel

    def _observation(
        self,
        entity: Entity,
        job: str,
        lookup: _Lookup,
        pings: Mapping[str, tuple[bool, str, Tunnel | None]],
        now: datetime,
    ) -> Observation:
        if job in lookup.failed:
            kind, detail = lookup.failed[job]
            return Observation.failed(entity.id, kind, detail)
        record = lookup.records.get(job)
        if record is None:
            return self._lost(entity, job, now)
        payload: dict[str, Any] = {"job_id": job, "job_state": record.state, "via": record.source}
        if record.reason and record.reason != "None":
            payload["reason"] = record.reason[:200]
        if record.exit_code:
            payload["exit_code"] = record.exit_code
        phase = phase_of(record.state)
        if phase is None:
            log.warning("slurm: job %s of %s is in unknown state %r", job, entity.id, record.state)
            return Observation(entity.id, (), payload, observed_at=now)
        data: dict[str, Any] = {}
        if phase is Phase.RUNNING:
            ok, detail, tunnel = pings[entity.id]
            payload["ping"] = detail
            data = {"node": record.node, "port": lookup.ports.get(job), "started_at": record.start}
            if tunnel is not None:
                data["tunnel"] = tunnel.as_data()
            return Observation(entity.id, events_for(phase, ok), payload, data, now)
        if phase in (Phase.QUEUED, Phase.REQUEUED):
            data = {"port": None}
        if phase not in (Phase.QUEUED, Phase.REQUEUED, Phase.ENDING):
            self._ended_jobs.add(job)
        if phase is not Phase.ENDING:
            data.update(self._drop_tunnel(entity))
        return Observation(entity.id, events_for(phase), payload, data or None, now)

    def _lost(self, entity: Entity, job: str, now: datetime) -> Observation:
        """The documented "ended, cause unknown" rule (see the module docstring)."""
        submitted = _submitted_at(entity.data, entity.created_at)
        if now - submitted < self.lost_after:
            return Observation.failed(entity.id, FailureKind.MISSING, f"job {job} not listed yet")
        payload = {"job_id": job, "cause": "unknown: no longer known to the scheduler"}
        self._ended_jobs.add(job)
        return Observation(entity.id, ("job_failed",), payload, self._drop_tunnel(entity), now)

    def _drop_tunnel(self, entity: Entity) -> dict[str, Any]:
        """Close the entity's tunnel; the data to record (nothing if it had none)."""
        cached = self._tunnels.pop(entity.id, None)
        recorded = Tunnel.from_data(entity.data.get("tunnel"))
        for tunnel in {cached, recorded} - {None}:
            assert tunnel is not None
            self.transport.close_tunnel(tunnel)
        return {"tunnel": None} if recorded is not None else {}

    # -- commands ----------------------------------------------------------------------------

    def find_job(self, tag: str) -> str | None:
        """The job of ours carrying `tag` in its comment (a submit that crashed before it was
        recorded), so submitting again does not start a second job."""
        out = self._call(["squeue", "-h", "--me", "-t", "all", "-o", "%i|%k"])
        for line in out.stdout.splitlines():
            job, _, comment = line.partition("|")
            if comment.strip() == tag and _JOB_ID.fullmatch(job.strip()):
                return job.strip()
        return None

    def submit_job(self, entity_id: str, arguments: Mapping[str, Any]) -> str:
        """sbatch the service's script (or find the job a crashed submit left); its job id.

        `ScriptError` (a `ValueError`) lists every invalid option; nothing is submitted then."""
        script = render_script(
            arguments.get("job_options"),
            arguments.get("container_options"),
            tag=job_tag(entity_id),
            port_dir=self.port_dir,
            port_range=self.port_range,
        )
        try:
            found = self.find_job(job_tag(entity_id))
            if found is not None:
                log.info("slurm: %s already has job %s; not submitting again", entity_id, found)
                return found
            out = self._call(["sbatch", "--parsable"], input=script)
        except TransportError as exc:
            raise CommandFailed("submit", entity_id, str(exc)) from exc
        job = out.stdout.strip().split(";", 1)[0]
        if not _JOB_ID.fullmatch(job):
            raise CommandFailed("submit", entity_id, f"sbatch printed {out.stdout[:100]!r}")
        return job

    def cancel(self, entity_id: str, job: str) -> None:
        """scancel, idempotent: a job already gone or ending is fine."""
        try:
            out = self._call(["scancel", job], ok=(0, 1))
        except TransportError as exc:
            raise CommandFailed("stop", entity_id, str(exc)) from exc
        if out.returncode != 0 and not any(text in out.stderr for text in _GONE):
            raise CommandFailed("stop", entity_id, out.stderr.strip()[:300])

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
            job = self.submit_job(entity.id, arguments)
            data = {"job_id": job, "submitted_at": now.isoformat()}
            return CommandResult(data=data, events=("job_pending",), payload={"job_id": job})
        if command in STOP_COMMANDS:
            if job is not None:
                self.cancel(entity.id, job)
            data = self._drop_tunnel(entity)
            return CommandResult(data=data or None, events=(command,), payload={"job_id": job})
        raise CommandFailed(command, entity.id, f"the slurm backend has no {command!r}")

    # -- after the engine decided ------------------------------------------------------------

    def release(self, entity: Entity, now: datetime) -> None:
        """The service ended on its own. If the service, not Slurm, gave up on the job (no
        healthy ping within STARTING's time limit), the job may still run: scancel it. Close
        its tunnel either way. A job this process saw end costs no scancel."""
        job = job_id_of(entity.data)
        if job is not None and job not in self._ended_jobs:
            try:
                self.cancel(entity.id, job)
                log.info("slurm: cancelled job %s of %s (%s)", job, entity.id, entity.state)
            except CommandFailed as exc:
                log.warning("slurm: could not cancel job %s: %s", job, exc)
        self._ended_jobs.discard(job or "")
        self._drop_tunnel(entity)

    def open_tunnel(self, entity: Entity) -> Tunnel | None:
        """A tunnel to the service (None when none is needed or its node/port are unknown)."""
        node = self.ping_host or entity.data.get("node")
        port = entity.data.get("port")
        if not self.tunnel or not isinstance(node, str) or not isinstance(port, int):
            return None
        return self._tunnel_for(entity, node, port)

    def close_tunnel(self, entity: Entity) -> None:
        self._drop_tunnel(entity)
