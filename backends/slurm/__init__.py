"""Slurm backend: services as batch jobs, locally on a login node or over SSH.

`SlurmBackend` is the `fsm.backends` entry point `slurm`; `submit_service` starts one service.
"""

from backends.slurm.backend import ReleaseNotConfirmed, SlurmBackend
from backends.slurm.identity import Identity, KeyFileError, load_key
from backends.slurm.script import ScriptError, render_script
from backends.slurm.settings import SlurmSettings
from backends.slurm.submit import submit_service
from backends.slurm.transport import (
    LocalTransport,
    SshTransport,
    Transport,
    TransportError,
    Tunnel,
)

__all__ = [
    "Identity",
    "KeyFileError",
    "LocalTransport",
    "ReleaseNotConfirmed",
    "ScriptError",
    "SlurmBackend",
    "SlurmSettings",
    "SshTransport",
    "Transport",
    "TransportError",
    "Tunnel",
    "load_key",
    "render_script",
    "submit_service",
]
