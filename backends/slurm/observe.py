"""One observe cycle for a batch of services: what each job is now, and what that implies.

1. one `squeue -j ID,ID,...` for all jobs; a listed job counts only if it is ours (identity:
   our tag in its name, our user, the submit time we bound) — an id now held by a stranger's
   job means our job is gone from the queue;
2. for jobs that are gone, and for jobs squeue shows ended (for their exit code), at most one
   more call: `sacct` (all records of the ids, ours picked by identity) when accounting is on,
   else `scontrol show job`; a job neither knows is "ended, cause unknown": FAILED once it was
   last seen more than `lost_after` seconds ago, no change before that;
3. for running jobs whose port for this run is not known: one `grep` over the per-run port
   files; then one health ping per job, in parallel (through an SSH tunnel when remote);
4. a run we had not seen (the job was requeued and runs again) restarts the service: PENDING,
   then STARTING on its new port.
When `squeue` itself fails, services whose endpoint for the current run is known are still
pinged: a good ping is recorded, anything else is a failed observation (nothing changes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from backends.slurm.cluster import Cluster
from backends.slurm.health import Target, ping_all
from backends.slurm.identity import Identity
from backends.slurm.parse import JobRecord, ParseError
from backends.slurm.script import port_file
from backends.slurm.settings import SlurmSettings
from backends.slurm.states import Phase, events_for, phase_of
from backends.slurm.transport import TransportError, Tunnel
from backends.slurm.tunnels import Tunnels
from fsm import Entity
from fsm.observation import FailureKind, Observation

log = logging.getLogger(__name__)

RUNNING_STATES = frozenset({"STARTING", "HEALTHY", "UNHEALTHY"})
FINAL_PHASES = frozenset({Phase.COMPLETED, Phase.CANCELLED, Phase.FAILED, Phase.TIMEOUT})
_Ping = tuple[bool, str, Tunnel | None]


def job_id_of(data: Mapping[str, Any]) -> str | None:
    """The job id recorded in an entity's data, if it is one (data is free-form JSON)."""
    value = data.get("job_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value.isdigit() and len(value) <= 12 else None


def _time(data: Mapping[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def last_seen(entity: Entity) -> datetime:
    """When the job was last seen (or submitted): where `lost_after` counts from."""
    times = [t for k in ("seen_at", "submitted_at") if (t := _time(entity.data, k)) is not None]
    return max(times, default=entity.created_at)


def _error(exc: Exception) -> tuple[FailureKind, str]:
    return (exc.kind if isinstance(exc, TransportError) else FailureKind.GARBAGE, str(exc))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Observer:
    """Observes batches for one backend (its cluster, identity, settings and tunnels)."""

    def __init__(
        self,
        cluster: Cluster,
        identity: Identity,
        settings: SlurmSettings,
        tunnels: Tunnels,
        tunnel: bool,
    ) -> None:
        self.cluster = cluster
        self.identity = identity
        self.settings = settings
        self.tunnels = tunnels
        self.tunnel = tunnel
        self.ended_jobs: set[str] = set()  # seen ended by Slurm: `release` need not ask

    def owned(self, entity: Entity, record: JobRecord | None, uid: int) -> bool:
        bound = entity.data.get("job_submit_time")
        submit = bound if isinstance(bound, str) else None
        return record is not None and self.identity.owns(entity.id, record, uid, submit)

    def observe(self, entities: Sequence[Entity], now: datetime) -> list[Observation]:
        results: dict[str, Observation] = {}
        jobs: dict[str, str] = {}
        for entity in entities:
            job = job_id_of(entity.data)
            if job is None:
                why = "no job id recorded: not submitted yet"
                results[entity.id] = Observation.failed(entity.id, FailureKind.MISSING, why)
            else:
                jobs[entity.id] = job
        tracked = [e for e in entities if e.id in jobs]
        if not tracked:
            return list(results.values())
        try:
            uid = self.cluster.uid()
            listed = self.cluster.squeue(sorted(set(jobs.values()), key=int))
        except (TransportError, ParseError) as exc:
            return [*results.values(), *self.ping_only(tracked, now, _error(exc))]
        records: dict[str, JobRecord] = {}
        for entity in tracked:
            record = listed.get(jobs[entity.id])
            if self.owned(entity, record, uid):
                assert record is not None
                records[entity.id] = record
            elif record is not None:
                log.info("slurm: job id %s is another job now (not %s's)", record.job_id, entity.id)
        failed = self._ended(tracked, jobs, records, uid)
        ports = self._ports(tracked, records, failed)
        pings = self._ping(tracked, records, ports, failed)
        for entity in tracked:
            if entity.id in failed:
                kind, detail = failed[entity.id]
                results[entity.id] = Observation.failed(entity.id, kind, detail)
            elif entity.id not in records:
                results[entity.id] = self._lost(entity, jobs[entity.id], now)
            else:
                record = records[entity.id]
                port = ports.get(entity.id)
                results[entity.id] = self._observation(entity, record, port, pings, now)
        return list(results.values())

    # -- the steps ---------------------------------------------------------------------------

    def _ended(
        self,
        tracked: Sequence[Entity],
        jobs: Mapping[str, str],
        records: dict[str, JobRecord],
        uid: int,
    ) -> dict[str, tuple[FailureKind, str]]:
        """Look up jobs squeue no longer lists as ours, and exit codes of ended ones."""
        wanted = [
            e
            for e in tracked
            if e.id not in records or phase_of(records[e.id].state) in FINAL_PHASES
        ]
        if not wanted:
            return {}
        since = min(last_seen(e) for e in wanted)  # sacct -S: a day before that
        ids = sorted({jobs[e.id] for e in wanted}, key=int)
        try:
            found = self.cluster.ended(ids, since)
            if found is None:  # accounting turned out to be off: scontrol, now
                log.info("slurm: accounting is disabled; using scontrol from now on")
                found = self.cluster.ended(ids, since) or []
        except (TransportError, ParseError) as exc:
            why = _error(exc)
            return {e.id: why for e in wanted if e.id not in records}
        for entity in wanted:
            mine = [r for r in found if r.job_id == jobs[entity.id] and self.owned(entity, r, uid)]
            if not mine:
                continue
            if entity.id not in records:
                records[entity.id] = mine[-1]
            elif mine[-1].exit_code:
                records[entity.id] = records[entity.id]._replace(exit_code=mine[-1].exit_code)
        return {}

    def _ports(
        self,
        tracked: Sequence[Entity],
        records: Mapping[str, JobRecord],
        failed: dict[str, tuple[FailureKind, str]],
    ) -> dict[str, int | None]:
        """The port of each running job's current run: recorded, or read from its file."""
        ports: dict[str, int | None] = {}
        files: dict[str, str] = {}
        for entity in tracked:
            record = records.get(entity.id)
            if record is None or phase_of(record.state) is not Phase.RUNNING:
                continue
            port = _int(entity.data.get("port"))
            same_run = _int(entity.data.get("run")) == record.restarts and (
                entity.data.get("started_at") == record.start
            )
            if port is not None and same_run:
                ports[entity.id] = port
            else:
                tag = self.identity.tag(entity.id)
                files[entity.id] = port_file(
                    self.settings.port_dir, record.job_id, record.restarts, tag
                )
                ports[entity.id] = None
        if files:
            try:
                ports.update(self.cluster.read_ports(files))
            except TransportError as exc:
                failed.update(dict.fromkeys(files, (exc.kind, f"reading the port: {exc}")))
        return ports

    def _target(self, entity: Entity, node: str, port: int, *, open_new: bool) -> Target | None:
        address = self.settings.ping_address(node)
        if not self.tunnel:
            return Target(address, port)
        if open_new:
            tunnel = self.tunnels.for_entity(entity, address, port)
        else:
            tunnel = self.tunnels.alive(entity.id, address, port)
            if tunnel is None:
                return None
        return Target("127.0.0.1", tunnel.local_port) if tunnel else Target(address, port)

    def _ping(
        self,
        tracked: Sequence[Entity],
        records: Mapping[str, JobRecord],
        ports: Mapping[str, int | None],
        failed: dict[str, tuple[FailureKind, str]],
    ) -> dict[str, _Ping]:
        """Ping every running service that reported a port; tunnels opened as needed."""
        targets: list[tuple[str, Target]] = []
        results: dict[str, _Ping] = {}
        for entity in tracked:
            record = records.get(entity.id)
            if entity.id not in ports or entity.id in failed or record is None:
                continue
            port, node = ports[entity.id], record.node
            if port is None or node is None:
                results[entity.id] = (False, "the job has not reported its port yet", None)
                continue
            try:
                target = self._target(entity, node, port, open_new=True)
            except TransportError as exc:
                failed[entity.id] = (exc.kind, str(exc))
                continue
            if target is not None:
                targets.append((entity.id, target))
        answers = ping_all([t for _, t in targets], self.settings.health_path, self._ping_timeout())
        for (entity_id, _), (ok, detail) in zip(targets, answers, strict=True):
            results[entity_id] = (ok, detail, self.tunnels.alive_any(entity_id))
        return results

    def _ping_timeout(self) -> float:
        return self.settings.health_timeout

    # -- building observations ---------------------------------------------------------------

    def _observation(
        self,
        entity: Entity,
        record: JobRecord,
        port: int | None,
        pings: Mapping[str, _Ping],
        now: datetime,
    ) -> Observation:
        payload: dict[str, Any] = {"job_id": record.job_id, "job_state": record.state}
        payload["via"] = record.source
        if record.reason and record.reason != "None":
            payload["reason"] = record.reason[:200]
        if record.exit_code:
            payload["exit_code"] = record.exit_code
        data: dict[str, Any] = {"seen_at": now.isoformat()}
        if record.submit and not isinstance(entity.data.get("job_submit_time"), str):
            data["job_submit_time"] = record.submit
        phase = phase_of(record.state)
        if phase is None:
            log.warning("slurm: job %s: unknown state %r", record.job_id, record.state)
            return Observation(entity.id, (), payload, data, now)
        if phase is Phase.RUNNING:
            ok, detail, tunnel = pings.get(entity.id, (False, "not pinged", None))
            payload["ping"] = detail
            if record.restarts:
                payload["restarts"] = record.restarts
            data.update(node=record.node, port=port, run=record.restarts, started_at=record.start)
            if tunnel is not None:
                data["tunnel"] = tunnel.as_data()
            events = events_for(phase, ok)
            seen_run = _int(entity.data.get("run"))
            if seen_run is not None and record.restarts > seen_run:
                events = ("job_requeued", *events)  # a new run: the service restarted
            return Observation(entity.id, events, payload, data, now)
        if phase in (Phase.QUEUED, Phase.REQUEUED):
            data.update(port=None, run=None)
        if phase in FINAL_PHASES:
            self.ended_jobs.add(record.job_id)
        if phase is not Phase.ENDING:
            data.update(self.tunnels.drop(entity))
        return Observation(entity.id, events_for(phase), payload, data, now)

    def _lost(self, entity: Entity, job: str, now: datetime) -> Observation:
        """The documented "ended, cause unknown" rule (see the module docstring)."""
        if now - last_seen(entity) < timedelta(seconds=self.settings.lost_after):
            return Observation.failed(entity.id, FailureKind.MISSING, f"job {job} not listed now")
        payload = {"job_id": job, "cause": "unknown: no longer known to the scheduler"}
        self.ended_jobs.add(job)
        return Observation(entity.id, ("job_failed",), payload, self.tunnels.drop(entity), now)

    def ping_only(
        self, tracked: Sequence[Entity], now: datetime, why: tuple[FailureKind, str]
    ) -> list[Observation]:
        """squeue failed: ping the services whose endpoint for the current run is known."""
        targets: list[tuple[Entity, Target]] = []
        results: list[Observation] = []
        for entity in tracked:
            node, port = entity.data.get("node"), _int(entity.data.get("port"))
            target = None
            if entity.state in RUNNING_STATES and isinstance(node, str) and port is not None:
                target = self._target(entity, node, port, open_new=False)
            if target is None:
                results.append(Observation.failed(entity.id, why[0], why[1]))
            else:
                targets.append((entity, target))
        answers = ping_all([t for _, t in targets], self.settings.health_path, self._ping_timeout())
        for (entity, _), (ok, detail) in zip(targets, answers, strict=True):
            if not ok:
                results.append(Observation.failed(entity.id, why[0], f"{why[1]}; ping: {detail}"))
                continue
            payload = {"ping": detail, "via": "ping only", "squeue": why[1][:200]}
            results.append(Observation(entity.id, ("ping_ok",), payload, None, now))
        return results
