"""`SimHostService`: the same services over the deterministic simulator (no cloud)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backends.base import Backend
from backends.mlos.base import EngineHostService
from backends.sim import SimBackend


class SimHostService(EngineHostService):
    """Simulated hosts: commands take `operationSeconds` (times `timeScale`); a remote
    execution is a simulated operation that fails with `operationFailureRate` (default 0)."""

    KEYS = frozenset(
        {"seed", "timeScale", "operationSeconds", "hostFailureRate", "operationFailureRate"}
    )
    START_PROVISIONS = True

    def _make_backend(self) -> Backend:
        config = self.config
        return SimBackend(
            int(config.get("seed", 0)),
            time_scale=float(config.get("timeScale", 1.0)),
            operation_seconds=float(config.get("operationSeconds", 2.0)),
            host_failure_rate=float(config.get("hostFailureRate", 0.0)),
            operation_failure_rate=float(config.get("operationFailureRate", 0.0)),
        )

    def _host_key(self, params: Mapping[str, Any]) -> str:
        name = params.get("vmName") or params.get("hostName") or "sim-host"
        return f"sim:{name}"

    def _exec_data(self, config: Mapping[str, Any]) -> dict[str, Any]:
        name = config.get("commandName")
        return {"name": name} if isinstance(name, str) else {}
