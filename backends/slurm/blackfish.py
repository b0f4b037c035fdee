"""Blackfish's `Service` API (seed 004) as async methods over the engine.

Nothing here decides a status: every change is an event the service lifecycle accepts or
refuses and the engine records as a transition. So the documented rules hold by construction
(STARTING never becomes UNHEALTHY, its time limit counts from entering STARTING, FAILED /
TIMEOUT / STOPPED are final), and Blackfish's known bugs do not come back: a failed squeue or
ssh call changes nothing, requeued / suspended / preempted jobs go back to PENDING, an unknown
Slurm state is logged and ignored, a dead tunnel is re-opened. The engine is synchronous; each
method runs it in a thread (`asyncio.to_thread`), so an event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from backends.slurm.backend import SlurmBackend
from backends.slurm.observe import job_id_of
from backends.slurm.submit import submit_service
from backends.slurm.supervised import SupervisedService
from backends.slurm.transport import Tunnel
from fsm import Engine, Entity, EntityNotFound, Event, FsmError
from fsm.worker import Worker
from storage import releases

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """The Slurm job behind a service, as the scheduler reports it now."""

    job_id: str
    state: str | None  # None: the scheduler no longer knows the job
    node: str | None = None
    port: int | None = None
    reason: str = ""
    exit_code: str = ""
    source: str = "squeue"


class Service(SupervisedService):
    """One service: `start` it, then `refresh`, `stop`, `open_tunnel`, `close_tunnel`, `get_job`.

    Give `id` to attach to a service started earlier (by this or another process).
    """

    def __init__(
        self,
        engine: Engine,
        worker: Worker,
        backend: SlurmBackend,
        id: str | None = None,
    ) -> None:
        self.engine = engine
        self.worker = worker
        self.backend = backend
        self.id = id

    def _entity(self) -> Entity:
        if self.id is None:
            raise FsmError("the service has not been started")
        return self.engine.get(self.id)

    @property
    def status(self) -> str:
        """The recorded status (a read; `refresh` asks the cluster)."""
        return self._entity().state

    async def start(
        self,
        container_options: Mapping[str, Any],
        job_options: Mapping[str, Any],
        *,
        data: Mapping[str, Any] | None = None,
        timeout: float = 600,
        every: float = 2,
    ) -> str:
        """Submit the job, record the service and wait for it to start (seed 004): returns
        once it is HEALTHY or in a final status, or after `timeout` seconds (then it is still
        PENDING or STARTING and the worker goes on driving it); the status.

        `data` may set per-service time limits, e.g. `{"time_limits": {"STARTING": 300}}`.
        Invalid options raise `ScriptError` listing every problem; nothing is submitted then.
        """
        if timeout < 0 or every <= 0:
            raise ValueError("timeout must not be negative and every must be positive")
        self.id = entity_id = self.id or uuid.uuid4().hex
        await asyncio.to_thread(self._start, entity_id, container_options, job_options, data)
        return await self.wait(("HEALTHY",), timeout=timeout, every=every)

    def _start(
        self,
        entity_id: str,
        container_options: Mapping[str, Any],
        job_options: Mapping[str, Any],
        data: Mapping[str, Any] | None,
    ) -> str:
        try:
            entity = self.engine.get(entity_id)
        except EntityNotFound:
            return submit_service(
                self.engine,
                self.worker,
                self.backend,
                job_options,
                container_options,
                data=data,
                entity_id=entity_id,
            )
        # a start whose sbatch failed: submit again (a job left by a crash is adopted)
        if job_id_of(entity.data) is not None or entity.terminal:
            raise FsmError(f"service {entity_id} was already started; a service starts once")
        arguments = {"job_options": dict(job_options), "container_options": dict(container_options)}
        self.worker.command(entity_id, "submit", arguments)
        return entity_id

    async def stop(self, delay: float = 0, timeout: bool = False, failed: bool = False) -> None:
        """Cancel the job (after `delay` seconds, as a persisted command run exactly once) and
        record STOPPED, or TIMEOUT / FAILED with `timeout` / `failed`. A service already in a
        final status stays as it is."""
        if timeout and failed:
            raise ValueError("a service stops either timed out or failed, not both")
        command = "job_timeout" if timeout else "job_failed" if failed else "stop"
        entity = await asyncio.to_thread(self._entity)
        if entity.terminal:
            log.info("service %s is already %s; stop does nothing", entity.id, entity.state)
            return
        if delay > 0:
            await asyncio.to_thread(self.worker.schedule, entity.id, command, delay=delay)
        else:
            await asyncio.to_thread(self.worker.command, entity.id, command)

    async def refresh(self) -> str:
        """Ping first; only when the ping fails ask the scheduler (job state, then a ping), as
        Blackfish documents it; record what that implies and return the status. A failed
        observation records nothing and returns the old one."""
        return await asyncio.to_thread(self._refresh)

    def _refresh(self) -> str:
        entity = self._entity()
        if entity.terminal:
            return entity.state
        now = self.engine.clock()
        observation = self.backend.ping_first(entity, now)  # a good ping needs no squeue
        if observation is None:
            observation = self.backend.observe_safely([entity], now)[0]
        if observation.failure is not None:
            log.info(
                "refresh of %s failed (%s): %s", entity.id, observation.failure, observation.detail
            )
            return entity.state
        last = len(observation.events) - 1
        events = [
            Event(
                entity.id,
                name,
                observation.payload,
                self.backend.name,
                observation.observed_at or now,
                data=observation.data if i == last else None,
            )
            for i, name in enumerate(observation.events)
        ]
        if not events:
            return entity.state
        terminal = self.engine.lifecycle(entity.lifecycle).terminal
        with self.engine.store.transaction() as uow:
            batch = self.engine.stage(uow, uow.lock_entities([entity.id]))
            for event in events:
                outcome = batch.add(event)
                if outcome.error is not None:
                    log.warning("refresh of %s: %s", entity.id, outcome.error)
            batch.flush()
            ended = [(t.entity_id, t.to_state) for t in batch.transitions if t.to_state in terminal]
            # as the worker does: the obligation to free the job, with the transition (durable)
            releases.request(uow, ended, now)
        self.engine.committed(batch)
        if ended:
            self.worker.run_releases()  # try it now; the worker retries until it is confirmed
        return self._entity().state

    async def wait(
        self, until: Collection[str] = ("HEALTHY",), timeout: float = 600, every: float = 2
    ) -> str:
        """Refresh every `every` seconds until the status is in `until` or final."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = await self.refresh()
            entity = await asyncio.to_thread(self._entity)
            if status in until or entity.terminal or loop.time() >= deadline:
                return status
            await asyncio.sleep(every)

    async def open_tunnel(self) -> Tunnel | None:
        """Make the service reachable from here (an SSH tunnel when the cluster is remote) and
        record its pid and ports; None when no tunnel is needed or the service is not up."""
        entity = await asyncio.to_thread(self._entity)
        tunnel = await asyncio.to_thread(self.backend.open_tunnel, entity)
        if tunnel is not None:
            await self.refresh()  # records the tunnel with the observation's data
        return tunnel

    async def close_tunnel(self) -> None:
        """Close the tunnel. While the service runs, the next refresh opens one again: its
        health ping needs it; `stop` closes it for good."""
        entity = await asyncio.to_thread(self._entity)
        await asyncio.to_thread(self.backend.close_tunnel, entity)

    async def get_job(self) -> Job | None:
        """The Slurm job backing the service (None before it was submitted)."""
        return await asyncio.to_thread(self._get_job)

    def _get_job(self) -> Job | None:
        entity = self._entity()
        job = job_id_of(entity.data)
        if job is None:
            return None
        port = entity.data.get("port")
        record = self.backend.job_record(entity)
        if record is None:
            return Job(job, None, port=port if isinstance(port, int) else None)
        return Job(
            job,
            record.state,
            record.node,
            port if isinstance(port, int) else None,
            record.reason,
            record.exit_code,
            record.source,
        )
