"""`LocalHostService`: this machine as the host, scripts run here as argument lists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backends.base import Backend
from backends.localhost import LocalHostBackend
from backends.mlos.base import EngineHostService


class LocalHostService(EngineHostService):
    """Host commands complete at once; `remote_exec` runs each line with `shlex.split` (no
    shell) and the environment parameters added to the environment. Config: `timeout`, `cwd`."""

    KEYS = frozenset({"timeout", "cwd"})
    START_PROVISIONS = True

    def _make_backend(self) -> Backend:
        timeout = self.config.get("timeout", 3600.0)
        cwd = self.config.get("cwd")
        return LocalHostBackend(timeout=float(timeout), cwd=str(cwd) if cwd else None)

    def _host_key(self, params: Mapping[str, Any]) -> str:
        return f"local:{params.get('hostName') or 'localhost'}"

    def _exec_data(self, config: Mapping[str, Any]) -> dict[str, Any]:
        name = config.get("commandName")
        return {"name": name} if isinstance(name, str) else {}
