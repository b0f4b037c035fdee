"""Blackfish's `Service`, kept running: `keep_running`, `restart`, `ensure_healthy`.

Blackfish users write `while ...: refresh(); if not HEALTHY: delete(); launch_service(<the
whole spec again>)`. Here the spec is retained by a supervisor (secrets as `{"$secret": NAME}`
references), every attempt is a service entity of its own with its history, and the loop is
the worker's. `ensure_healthy` also drives the worker's ticks while it waits, so a script
needs no separate `fsm run` (one may run as well: the database arbitrates).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from backends.slurm.script import render_script
from fsm import FsmError
from fsm.supervisor import Supervisor

if TYPE_CHECKING:
    from backends.slurm.backend import SlurmBackend
    from fsm import Engine
    from fsm.worker import Worker


class SupervisedService:
    """Mixed into `Service`: after `keep_running`, `id` follows the current attempt, so
    `status`, `refresh`, `get_job` and `open_tunnel` act on the job that serves now."""

    engine: Engine
    worker: Worker
    backend: SlurmBackend
    id: str | None
    supervisor_id: str | None = None

    async def keep_running(
        self,
        container_options: Mapping[str, Any],
        job_options: Mapping[str, Any],
        policy: Mapping[str, Any] | None = None,
        *,
        data: Mapping[str, Any] | None = None,
        supervisor_id: str | None = None,
    ) -> str:
        """Record a supervisor for this spec under `policy` (see `fsm.supervision_policy`);
        returns its id. Invalid options raise `ScriptError` before anything is recorded."""
        chosen = supervisor_id or uuid.uuid4().hex
        render_script(  # every problem with the options now, not at the first launch
            job_options,
            container_options,
            tag=self.backend.tag(f"{chosen}-a1"),
            port_dir=self.backend.port_dir,
            port_range=self.backend.port_range,
        )
        submit = {"job_options": dict(job_options), "container_options": dict(container_options)}
        spec = {"data": dict(data or {}), "submit": submit}
        sup = await asyncio.to_thread(Supervisor.create, self.engine, spec, policy, id=chosen)
        self.supervisor_id = sup.id
        return sup.id

    def _supervisor(self) -> Supervisor:
        if self.supervisor_id is None:
            raise FsmError("this service is not supervised: start it with keep_running()")
        return Supervisor(self.engine, self.supervisor_id)

    async def ensure_healthy(self, timeout: float = 600, every: float = 2) -> tuple[str, int]:
        """(host, port) of the current healthy attempt, ticking the worker while it waits;
        `NotHealthy` with the reason when the supervisor gave up, was stopped, or `timeout`
        passed."""
        sup = self._supervisor()

        def tick_then_sleep(seconds: float) -> None:
            self.worker.tick()
            time.sleep(seconds)

        def wait() -> tuple[str, int]:
            self.worker.tick()
            return sup.ensure_healthy(timeout, every=every, sleep=tick_then_sleep)

        where = await asyncio.to_thread(wait)
        current = sup.current()
        self.id = current.id if current is not None else self.id
        return where

    async def restart(self) -> str | None:
        """Replace the current attempt now (its job is cancelled, a new one submitted), outside
        the restart budget; returns the id of the attempt replaced (None if none was live)."""
        sup = self._supervisor()
        replaced = await asyncio.to_thread(sup.restart)
        if replaced is not None:
            await asyncio.to_thread(self.worker.run_commands)  # the scancel, now
        return replaced

    async def stop_supervised(self) -> str:
        """Stop the supervisor: its attempt's job is cancelled and nothing restarts."""
        sup = self._supervisor()
        state = await asyncio.to_thread(sup.stop)
        await asyncio.to_thread(self.worker.tick)
        return state
