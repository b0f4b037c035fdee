"""`AzureVMService`: seed 003's method set over Azure VMs, every step in the engine."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from backends.azure import AzureBackend, AzureSettings
from backends.base import Backend
from backends.mlos.base import EngineHostService
from backends.mlos.settings import lookup

_RUN_COMMAND_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class AzureVMService(EngineHostService):
    """Azure VMs through azure-mgmt-compute (see `backends.azure`).

    Config: `subscription`, `resourceGroup`, `location`, `vmSpec` (a VirtualMachine body as in
    Azure's REST examples: `properties.hardwareProfile`, `storageProfile`, `osProfile`,
    `networkProfile`), and optionally `baseUrl`, `credential`, `tokenEnv`, `caBundle`,
    `requestTimeout`, `requestTotalRetries`, `requestBackoffFactor`. Parameters: `vmName`
    (required), `resourceGroup` and `location` (override the config), `vmSize`.
    """

    KEYS = frozenset(
        {
            "subscription",
            "resourceGroup",
            "location",
            "vmSpec",
            "baseUrl",
            "credential",
            "tokenEnv",
            "caBundle",
            "requestTimeout",
            "requestTotalRetries",
            "requestBackoffFactor",
        }
    )

    def _setting(self, key: str) -> Any:
        return lookup(self.config, self._global_config, key)

    def azure_settings(self) -> AzureSettings:
        names = {
            "subscription": "subscription_id",
            "baseUrl": "base_url",
            "credential": "credential",
            "tokenEnv": "token_env",
            "caBundle": "ca_bundle",
            "requestTimeout": "timeout",
            "requestTotalRetries": "retry_total",
            "requestBackoffFactor": "retry_backoff_factor",
            "location": "location",
        }
        found = {ours: self._setting(key) for key, ours in names.items()}
        return AzureSettings(**{k: v for k, v in found.items() if v is not None})

    def _make_backend(self) -> Backend:
        return AzureBackend(self.azure_settings())

    def _target(self, params: Mapping[str, Any]) -> dict[str, str]:
        vm = params.get("vmName")
        rg = params.get("resourceGroup") or self._setting("resourceGroup")
        if not isinstance(vm, str) or not vm:
            raise ValueError("the parameters need a vmName")
        if not isinstance(rg, str) or not rg:
            raise ValueError("no resourceGroup in the parameters or the service config")
        target = {"resource_group": rg, "vm_name": vm}
        location = params.get("location") or self._setting("location")
        if isinstance(location, str) and location:
            target["location"] = location
        return target

    def _host_key(self, params: Mapping[str, Any]) -> str:
        target = self._target(params)
        return f"azure:{target['resource_group']}/{target['vm_name']}".lower()

    def _host_data(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"azure": self._target(params)}

    def _operation_data(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"azure": self._target(params)}

    def _call_arguments(self, command: str, params: Mapping[str, Any]) -> dict[str, Any]:
        if command != "provision":
            return {}
        spec = self._setting("vmSpec")
        if not isinstance(spec, Mapping):
            raise ValueError("provisioning needs a vmSpec in the service config")
        spec = copy.deepcopy(dict(spec))
        size = params.get("vmSize")
        if isinstance(size, str) and size:
            properties = spec.setdefault("properties", {})
            properties.setdefault("hardwareProfile", {})["vmSize"] = size
        return {"spec": spec}

    def _exec_data(self, config: Mapping[str, Any]) -> dict[str, Any]:
        name = config.get("commandName")
        name = _RUN_COMMAND_NAME.sub("-", name)[:80] if isinstance(name, str) else ""
        return {
            "command": "run_command",
            "azure": {**self._target(config), "run_command": name or "fsm-remote-exec"},
        }
