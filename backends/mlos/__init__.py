"""mlos_bench-compatible services (needs the `mlos` extra), every step recorded by the engine.

Load one from an mlos_bench service config by class name, e.g.
`{"class": "backends.mlos.AzureVMService", "config": {...}}` (see the README). Each class is
imported on first use, so the simulated and local services do not need the Azure SDK.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backends.mlos.azure import AzureVMService
    from backends.mlos.local import LocalHostService
    from backends.mlos.service import EngineHostService
    from backends.mlos.sim import SimHostService

_WHERE = {
    "AzureVMService": "backends.mlos.azure",
    "EngineHostService": "backends.mlos.service",
    "LocalHostService": "backends.mlos.local",
    "SimHostService": "backends.mlos.sim",
}
__all__ = ["AzureVMService", "EngineHostService", "LocalHostService", "SimHostService"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
