"""Slurm backend: services as batch jobs, locally on a login node or over SSH.

`SlurmBackend` is the `fsm.backends` entry point `slurm`; `submit_service` starts one service.
"""

from backends.slurm.backend import SlurmBackend, job_tag
from backends.slurm.script import ScriptError, render_script
from backends.slurm.submit import submit_service
from backends.slurm.transport import (
    LocalTransport,
    SshTransport,
    Transport,
    TransportError,
    Tunnel,
)

__all__ = [
    "LocalTransport",
    "ScriptError",
    "SlurmBackend",
    "SshTransport",
    "Transport",
    "TransportError",
    "Tunnel",
    "job_tag",
    "render_script",
    "submit_service",
]
