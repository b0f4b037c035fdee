"""`AzureVMService`: seed 003's method set over Azure VMs, every step in the engine."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from mlos_bench.dict_templater import DictTemplater
from mlos_bench.services.base_service import Service
from mlos_bench.services.types.authenticator_type import SupportsAuth
from mlos_bench.util import merge_parameters

from backends.azure import AzureBackend, AzureSettings
from backends.base import Backend
from backends.mlos.service import EngineHostService
from backends.mlos.settings import lookup, positive

_RUN_COMMAND_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class AzureVMService(EngineHostService):
    """Azure VMs through azure-mgmt-compute (see `backends.azure`), with upstream's config.

    Config: `subscription`, `resourceGroup`, and what to provision from — upstream's
    `deploymentTemplatePath` + `deploymentTemplateParameters` (+ `customDataFile`), an ARM
    deployment through azure-mgmt-resource, or `vmSpec` (a VirtualMachine body as in Azure's
    REST examples) — plus `location`, `requestTimeout`, `requestTotalRetries`,
    `requestBackoffFactor`, and ours: `baseUrl`, `credential`, `tokenEnv`, `caBundle`.
    Parameters: `vmName` (or the config's), `resourceGroup` and `location` (override the
    config), `vmSize`, `deploymentName` (default `<vmName>-deployment`, as upstream).
    Credentials: the parent auth service's (mlos_bench's `service-auth.jsonc`), else the
    `credential` named (azure-identity's DefaultAzureCredential by default).
    """

    KEYS = frozenset(
        {
            "subscription",
            "resourceGroup",
            "location",
            "vmSpec",
            "deploymentTemplatePath",
            "deploymentTemplateParameters",
            "customDataFile",
            "baseUrl",
            "credential",
            "tokenEnv",
            "caBundle",
            "requestTimeout",
            "requestTotalRetries",
            "requestBackoffFactor",
        }
    )

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        global_config: dict[str, Any] | None = None,
        parent: Service | None = None,
        methods: Any = None,
    ) -> None:
        super().__init__(config, global_config, parent, methods)
        self._template: dict[str, Any] = {}
        self._deploy_params: dict[str, Any] = {}
        path = self.config.get("deploymentTemplatePath")
        if path is not None:
            self._load_template(str(path), global_config or {})

    def _load_template(self, path: str, global_config: Mapping[str, Any]) -> None:
        """Upstream's reading of the template and its parameters (`$var` expanded from the
        globals, then the globals merged in), and `customDataFile` as `customData`."""
        template = self.config_loader_service.load_config(path, schema_type=None)
        if not isinstance(template, dict):
            raise ValueError(f"deploymentTemplatePath {path!r} is not a JSON object")
        self._template = template
        params = self.config.get("deploymentTemplateParameters") or {}
        if not isinstance(params, dict):
            raise ValueError("deploymentTemplateParameters must be an object")
        expanded = DictTemplater(params).expand_vars(extra_source_dict=dict(global_config))
        self._deploy_params = merge_parameters(dest=expanded, source=dict(global_config))
        custom = self.config.get("customDataFile")
        if custom:
            if self._deploy_params.get("customData"):
                raise ValueError("Both customDataFile and customData are specified.")
            resolved = self.config_loader_service.resolve_path(str(custom))
            with open(resolved, encoding="utf-8") as handle:
                self._deploy_params["customData"] = handle.read()

    @property
    def deploy_params(self) -> dict[str, Any]:
        """The deployment parameters (upstream's property of the same name)."""
        return self._deploy_params

    def _setting(self, key: str) -> Any:
        return lookup(self.config, self._global_config, key)

    def azure_settings(self) -> AzureSettings:
        names = {
            "subscription": "subscription_id",
            "baseUrl": "base_url",
            "credential": "credential",
            "tokenEnv": "token_env",
            "caBundle": "ca_bundle",
            "requestTotalRetries": "retry_total",
            "requestBackoffFactor": "retry_backoff_factor",
            "location": "location",
        }
        found: dict[str, Any] = {ours: self._setting(key) for key, ours in names.items()}
        timeout = self._setting("requestTimeout")
        if timeout is not None:
            found["timeout"] = positive(timeout, "requestTimeout", 30.0)
        for key in ("retry_total",):
            if isinstance(found.get(key), str):
                found[key] = int(found[key])
        if isinstance(found.get("retry_backoff_factor"), str):
            found["retry_backoff_factor"] = float(found["retry_backoff_factor"])
        return AzureSettings(**{k: v for k, v in found.items() if v is not None})

    def _make_backend(self) -> Backend:
        """Credentials as upstream's: from the parent's auth service (the shipped
        `service-auth.jsonc`: mlos_bench's AzureAuthService, DefaultAzureCredential or its
        service principal) unless the config names one (`credential`)."""
        settings = self.azure_settings()
        if self._setting("credential") is None and isinstance(self._parent, SupportsAuth):
            return AzureBackend(settings, credential=self._parent.get_credential())
        return AzureBackend(settings)

    # -- naming --------------------------------------------------------------------------------

    def _target(self, params: Mapping[str, Any]) -> dict[str, str]:
        vm = self._param(params, "vmName")
        rg = self._param(params, "resourceGroup") or self._setting("resourceGroup")
        if not isinstance(vm, str) or not vm:
            raise ValueError("Missing required parameter: vmName")
        if not isinstance(rg, str) or not rg:
            raise ValueError("Missing required parameter: resourceGroup")
        target = {"resource_group": rg, "vm_name": vm}
        location = self._param(params, "location") or self._setting("location")
        location = location or self._deploy_params.get("location")
        if isinstance(location, str) and location:
            target["location"] = location
        return target

    def _host_key(self, params: Mapping[str, Any]) -> str:
        target = self._target(params)
        return f"azure:{target['resource_group']}/{target['vm_name']}".lower()

    def _host_data(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"azure": self._target(params)}

    def _operation_data(self, params: Mapping[str, Any]) -> dict[str, Any]:
        target = self._target(params)
        if self._template:
            name = self._param(params, "deploymentName") or f"{target['vm_name']}-deployment"
            target["deployment"] = str(name)
        return {"azure": target}

    # -- provisioning --------------------------------------------------------------------------

    def _check_provisionable(self, params: Mapping[str, Any]) -> None:
        self._target(params)
        if not self._template and not isinstance(self._setting("vmSpec"), Mapping):
            raise ValueError(
                f"Missing deployment template: {self} has neither deploymentTemplatePath nor vmSpec"
            )

    def _call_arguments(self, command: str, params: Mapping[str, Any]) -> dict[str, Any]:
        if command != "provision":
            return {}
        if self._template:
            return {"deployment": self._deployment_body(params)}
        spec = copy.deepcopy(dict(self._setting("vmSpec")))
        size = params.get("vmSize")
        if isinstance(size, str) and size:
            properties = spec.setdefault("properties", {})
            properties.setdefault("hardwareProfile", {})["vmSize"] = size
        return {"spec": spec}

    def _deployment_body(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Upstream's request: the template, and its declared parameters from the deployment
        parameters overridden by the call's."""
        merged = merge_parameters(dest=copy.deepcopy(self._deploy_params), source=dict(params))
        declared = self._template.get("parameters") or {}
        return {
            "properties": {
                "mode": "Incremental",
                "template": self._template,
                "parameters": {k: {"value": v} for k, v in merged.items() if k in declared},
            }
        }

    def _exec_data(self, config: Mapping[str, Any]) -> dict[str, Any]:
        name = config.get("commandName")
        name = _RUN_COMMAND_NAME.sub("-", name)[:80] if isinstance(name, str) else ""
        return {
            "command": "run_command",
            "azure": {**self._target(config), "run_command": name or "fsm-remote-exec"},
        }
