"""Every Slurm job state, and what it means for a service (the lifecycle event it implies).

The rules (seed 004's documented life-cycle, not Blackfish's code):
- queued, or back in the queue (requeued, held for requeue, suspended, stopped, preempted):
  PENDING. CONFIGURING (nodes still booting) counts as queued too, so boot time is not taken
  from the service's start-up grace period.
- running (also while resizing or being signalled): the job says nothing about health, so a
  ping decides between STARTING/HEALTHY/UNHEALTHY.
- COMPLETING and STAGE_OUT: the job is ending and its final state is not known yet: no event.
- COMPLETED means the service's program exited 0 by itself. A service should not do that, and
  a stop we asked for has already made the service STOPPED, so it is a failure (job_failed).
- CANCELLED (sacct prints "CANCELLED by <uid>"): someone cancelled the job: STOPPED.
- TIMEOUT and DEADLINE: TIMEOUT. FAILED, NODE_FAIL, BOOT_FAIL, OUT_OF_MEMORY, REVOKED: FAILED.
- SPECIAL_EXIT is a job requeued and held by an epilog: PENDING.
- A state not in this table is logged and changes nothing.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Phase(StrEnum):
    """What a job state means for the service it runs."""

    QUEUED = "queued"
    REQUEUED = "requeued"
    RUNNING = "running"
    ENDING = "ending"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    TIMEOUT = "timeout"


SLURM_STATES: dict[str, Phase] = {
    "PENDING": Phase.QUEUED,
    "CONFIGURING": Phase.QUEUED,
    "REQUEUED": Phase.REQUEUED,
    "REQUEUE_HOLD": Phase.REQUEUED,
    "REQUEUE_FED": Phase.REQUEUED,
    "SUSPENDED": Phase.REQUEUED,
    "STOPPED": Phase.REQUEUED,
    "PREEMPTED": Phase.REQUEUED,
    "SPECIAL_EXIT": Phase.REQUEUED,
    "RUNNING": Phase.RUNNING,
    "RESIZING": Phase.RUNNING,
    "SIGNALING": Phase.RUNNING,
    "COMPLETING": Phase.ENDING,
    "STAGE_OUT": Phase.ENDING,
    "COMPLETED": Phase.COMPLETED,
    "CANCELLED": Phase.CANCELLED,
    "FAILED": Phase.FAILED,
    "NODE_FAIL": Phase.FAILED,
    "BOOT_FAIL": Phase.FAILED,
    "OUT_OF_MEMORY": Phase.FAILED,
    "REVOKED": Phase.FAILED,
    "TIMEOUT": Phase.TIMEOUT,
    "DEADLINE": Phase.TIMEOUT,
}

_PHASE_EVENTS: dict[Phase, tuple[str, ...]] = {
    Phase.QUEUED: ("job_pending",),
    Phase.REQUEUED: ("job_requeued",),
    Phase.ENDING: (),
    Phase.COMPLETED: ("job_failed",),
    Phase.CANCELLED: ("job_cancelled",),
    Phase.FAILED: ("job_failed",),
    Phase.TIMEOUT: ("job_timeout",),
}

_STATE = re.compile(r"([A-Z_]{2,32})\+?(?: by -?\d{1,10})?")


def normalize(raw: str) -> str | None:
    """`"CANCELLED by 1000"` -> `"CANCELLED"`; None for text that is not a state at all."""
    match = _STATE.fullmatch(raw.strip())
    return match.group(1) if match else None


def phase_of(raw: str) -> Phase | None:
    """The phase of a state as squeue, sacct or scontrol print it; None when unknown."""
    state = normalize(raw)
    return None if state is None else SLURM_STATES.get(state)


def events_for(phase: Phase, ping_ok: bool | None = None) -> tuple[str, ...]:
    """The service events a phase implies; a running job also needs the ping's result."""
    if phase is Phase.RUNNING:
        if ping_ok is None:
            return ("job_running",)
        return ("job_running", "ping_ok" if ping_ok else "ping_failed")
    return _PHASE_EVENTS[phase]
