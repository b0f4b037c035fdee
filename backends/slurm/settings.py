"""The Slurm backend's settings, checked once: every problem is reported, nothing half-set.

`health_path` defaults to `/health` (what Blackfish's services and the README's example use);
`null` pings with a bare TCP connect. `ping_host` is one address for every node, or a mapping
from node name (as `squeue` prints it) to the address this machine reaches it at; a node not
in the mapping is pinged by its name. `bin_dir` is where the Slurm commands live on the
cluster (default: the cluster's PATH); `command_paths` overrides single commands.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.slurm.identity import DEFAULT_KEY_FILE
from backends.slurm.script import DEFAULT_PORT_DIR

#: the cluster-side commands the backend runs (argv[0] before `bin_dir`/`command_paths`)
SCHEDULER_COMMANDS = frozenset({"squeue", "sacct", "scontrol", "sbatch", "scancel"})
CLUSTER_COMMANDS = ("squeue", "sacct", "scontrol", "sbatch", "scancel", "grep", "rm", "id")
_HEALTH_PATH = re.compile(r"/[A-Za-z0-9_.~!$&'()*+,;=:@%/?\-]{0,500}")
_ABS_PATH = re.compile(r"/[A-Za-z0-9_./+\-]{0,1000}")
_HOST = re.compile(r"[A-Za-z0-9_.:\-\[\]]{1,255}")
DEFAULT_HEALTH_PATH = "/health"


@dataclass(frozen=True)
class SlurmSettings:
    health_path: str | None = DEFAULT_HEALTH_PATH
    health_timeout: float = 2.0
    accounting: bool | None = None  # None: found out on first use
    port_dir: str = DEFAULT_PORT_DIR
    port_range: tuple[int, int] = (20000, 40000)
    ping_host: str | Mapping[str, str] | None = None
    lost_after: float = 120.0
    tunnel: bool | None = None  # None: when the transport is remote
    bin_dir: str | None = None
    command_paths: Mapping[str, str] = field(default_factory=dict)
    key_file: str = DEFAULT_KEY_FILE
    observe_timeout: float = 30.0
    command_timeout: float = 30.0
    release_timeout: float = 30.0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("invalid slurm backend settings: " + "; ".join(problems))

    def problems(self) -> list[str]:
        found: list[str] = []
        if self.health_path is not None and not _HEALTH_PATH.fullmatch(str(self.health_path)):
            found.append(f"health_path must be an absolute URL path, got {self.health_path!r}")
        for name in ("health_timeout", "observe_timeout", "command_timeout", "release_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                found.append(f"{name} must be a positive number of seconds")
        if isinstance(self.lost_after, bool) or not isinstance(self.lost_after, (int, float)):
            found.append("lost_after must be a number of seconds")
        elif self.lost_after < 0:
            found.append("lost_after must not be negative")
        if self.bin_dir is not None and not _ABS_PATH.fullmatch(self.bin_dir):
            found.append(f"bin_dir must be an absolute path, got {self.bin_dir!r}")
        if not isinstance(self.command_paths, Mapping):
            found.append("command_paths must map command names to absolute paths")
        else:
            for name, path in self.command_paths.items():
                if name not in CLUSTER_COMMANDS:
                    found.append(f"command_paths: unknown command {name!r}")
                elif not isinstance(path, str) or not _ABS_PATH.fullmatch(path):
                    found.append(f"command_paths.{name} must be an absolute path")
        hosts = self.ping_host
        if isinstance(hosts, Mapping):
            pairs = list(hosts.items())
        else:
            pairs = [] if hosts is None else [("*", hosts)]
        for node, address in pairs:
            if not isinstance(address, str) or not _HOST.fullmatch(address):
                found.append(f"ping_host for {node!r} must be a host name or address")
        return found

    def ping_address(self, node: str) -> str:
        """Where to ping a service running on `node`."""
        if isinstance(self.ping_host, str):
            return self.ping_host
        if isinstance(self.ping_host, Mapping):
            return self.ping_host.get(node, node)
        return node

    def command_path(self, name: str) -> str:
        if name in self.command_paths:
            return self.command_paths[name]
        if self.bin_dir is not None and name in SCHEDULER_COMMANDS:
            return f"{self.bin_dir.rstrip('/')}/{name}"
        return name

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SlurmSettings:
        """From the backend's config entry (without `kind`, `lifecycles`, `transport`)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown slurm backend settings: {sorted(unknown)}")
        options = dict(config)
        if "port_range" in options:
            try:
                low, high = options["port_range"]
                options["port_range"] = (int(low), int(high))
            except (TypeError, ValueError):
                raise ValueError("port_range must be two port numbers [low, high]") from None
        if "command_paths" in options and options["command_paths"] is None:
            options["command_paths"] = {}
        return cls(**options)
