"""Starting one service: the options checked, the entity created in SUBMITTED, then the
backend's own `submit` command (sbatch) run through the worker, which records the job id with
`job_pending` (a submitted job is queued).

Invalid options raise `ScriptError` before anything exists. If sbatch fails (the controller is
down, ...) the entity stays in SUBMITTED without a job and the error is raised: run
`worker.command(id, "submit", arguments)` again, or schedule it. A submit retried after a
crash between sbatch and its record adopts the job (its name carries the entity's tag, see
backends.slurm.identity) instead of submitting a second one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from backends.slurm.backend import SlurmBackend
from fsm import Engine
from fsm.worker import Worker


def submit_service(
    engine: Engine,
    worker: Worker,
    backend: SlurmBackend,
    job_options: Mapping[str, Any],
    container_options: Mapping[str, Any],
    *,
    data: Mapping[str, Any] | None = None,
    entity_id: str | None = None,
) -> str:
    """Create the service and submit its job; returns the entity id."""
    entity_id = entity_id or uuid.uuid4().hex
    arguments = {"job_options": dict(job_options), "container_options": dict(container_options)}
    backend.script(entity_id, arguments)  # every problem with the options, before anything
    engine.create("service", dict(data or {}), id=entity_id)
    worker.command(entity_id, "submit", arguments)
    return entity_id
