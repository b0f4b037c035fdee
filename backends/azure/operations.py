"""Which SDK call carries out each command, to start it and to resume polling it.

Every command is a long-running ARM operation. Resuming calls the *same* `begin_*` method with
`continuation_token=`, so the recreated poller keeps polling the operation that was started
(its Azure-AsyncOperation URL), never a new one.

A VM provisioned from an ARM template is a deployment (azure-mgmt-resource's
`deployments.begin_create_or_update`, the same long-running-operation machinery). A Run Command
is sent through the compute client's own pipeline and polled with ARM polling: the SDK's
`begin_create_or_update` for run commands refuses the 202 Accepted that the REST API documents
for it.

OS-level commands: `shutdown` is a power-off *with* the graceful OS shutdown Azure performs
(ACPI signal through the hypervisor; `force` skips it), and `reboot` is Azure's restart, which
also reboots the guest OS. A `shutdown -h now` through Run Command would race the agent that has
to report the command's result, so it could never end as SUCCEEDED reliably.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    map_error,
)
from azure.core.pipeline import PipelineResponse
from azure.core.polling import LROPoller, PollingMethod
from azure.core.rest import HttpRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.core.exceptions import ARMErrorFormat
from azure.mgmt.resource import ResourceManagementClient

#: every host command the backend carries out, and the one extra operation: a run command
HOST_COMMANDS = (
    "provision",
    "start",
    "stop",
    "shutdown",
    "restart",
    "reboot",
    "deallocate",
    "deprovision",
)
RUN_COMMAND = "run_command"
COMMANDS = (*HOST_COMMANDS, RUN_COMMAND)
#: the api-version of Run Command requests (azure-mgmt-compute 39's own default)
RUN_COMMAND_API_VERSION = "2026-04-01"
_ERRORS = {
    401: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
}


@dataclass(frozen=True)
class Target:
    """What an operation acts on; kept in the operation entity's data."""

    resource_group: str
    vm_name: str
    run_command: str | None = None
    deployment: str | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Target:
        found = data.get("azure")
        if not isinstance(found, Mapping):
            raise ValueError("operation data has no 'azure' target")
        rg, vm, rc = found.get("resource_group"), found.get("vm_name"), found.get("run_command")
        deployment = found.get("deployment")
        if not (isinstance(rg, str) and rg and isinstance(vm, str) and vm):
            raise ValueError("operation target needs resource_group and vm_name")
        for name, value in (("run_command", rc), ("deployment", deployment)):
            if value is not None and not (isinstance(value, str) and value):
                raise ValueError(f"{name} must be a non-empty name")
        return cls(rg, vm, rc, deployment)

    def to_data(self) -> dict[str, str]:
        data = {"resource_group": self.resource_group, "vm_name": self.vm_name}
        if self.run_command:
            data["run_command"] = self.run_command
        if self.deployment:
            data["deployment"] = self.deployment
        return data


Begin = Callable[..., LROPoller[Any]]


def begin(
    client: ComputeManagementClient,
    command: str,
    target: Target,
    arguments: Mapping[str, Any],
    resources: ResourceManagementClient | None = None,
) -> Begin:
    """The SDK call for `command`, bound to its target and arguments; call it with `polling=`
    (and `continuation_token=` to resume)."""
    vms = client.virtual_machines
    rg, vm = target.resource_group, target.vm_name
    force = bool(arguments.get("force", False))

    def bind(method: Callable[..., LROPoller[Any]], *args: Any, **kwargs: Any) -> Begin:
        return lambda **extra: method(*args, **kwargs, **extra)

    if command == "provision" and target.deployment:
        if resources is None:
            raise ValueError("a deployment needs the resource management client")
        body = dict(arguments.get("deployment") or {})
        return bind(resources.deployments.begin_create_or_update, rg, target.deployment, body)
    if command == "provision":
        return bind(vms.begin_create_or_update, rg, vm, dict(arguments.get("spec") or {}))
    if command == "start":
        return bind(vms.begin_start, rg, vm)
    if command in ("stop", "shutdown"):
        return bind(vms.begin_power_off, rg, vm, skip_shutdown=force)
    if command in ("restart", "reboot"):
        return bind(vms.begin_restart, rg, vm)
    if command == "deallocate":
        return bind(vms.begin_deallocate, rg, vm)
    if command == "deprovision":
        return bind(vms.begin_delete, rg, vm, force_deletion=force or None)
    if command == RUN_COMMAND:
        if not target.run_command:
            raise ValueError("a run command needs a name")
        body = dict(arguments.get("body") or {})
        name = target.run_command
        return lambda **extra: begin_run_command(client, rg, vm, name, body, **extra)
    raise ValueError(f"unknown azure command {command!r}; known: {COMMANDS}")


def begin_run_command(
    client: ComputeManagementClient,
    resource_group: str,
    vm_name: str,
    name: str,
    body: Mapping[str, Any],
    *,
    polling: PollingMethod[Any],
    continuation_token: str | None = None,
) -> LROPoller[Any]:
    """PUT a managed Run Command through the client's pipeline (its auth, retries, TLS) and
    poll it with ARM polling; 200, 201 and 202 all start the operation."""
    pipeline = client._client
    if continuation_token is not None:
        return LROPoller.from_continuation_token(
            polling_method=polling,
            continuation_token=continuation_token,
            client=pipeline,
            deserialization_callback=_no_body,
        )
    parts = [quote(str(p), safe="") for p in (client._config.subscription_id, resource_group)]
    url = (
        f"{client._config.base_url.rstrip('/')}/subscriptions/{parts[0]}/resourceGroups/"
        f"{parts[1]}/providers/Microsoft.Compute/virtualMachines/{quote(vm_name, safe='')}"
        f"/runCommands/{quote(name, safe='')}"
    )
    request = HttpRequest(
        "PUT", url, params={"api-version": RUN_COMMAND_API_VERSION}, json=dict(body)
    )
    response: PipelineResponse[Any, Any] = pipeline._pipeline.run(request, stream=False)
    status = response.http_response.status_code
    if status not in (200, 201, 202):
        map_error(status_code=status, response=response.http_response, error_map=_ERRORS)
        raise HttpResponseError(response=response.http_response, error_format=ARMErrorFormat)
    return LROPoller(pipeline, response, _no_body, polling)


def _no_body(response: PipelineResponse[Any, Any]) -> None:
    """The run command's result is read from its instance view, not from the poll."""
    return None


def run_command_body(
    script: list[str],
    environment: Mapping[str, Any],
    *,
    location: str,
    timeout: int,
) -> dict[str, Any]:
    """A managed Run Command that runs `script` synchronously (the operation ends with it).

    Environment values go in `protectedParameters`: Azure hands them to the script as
    environment variables and never returns them in any response.
    """
    return {
        "location": location,
        "properties": {
            "source": {"script": "\n".join(script)},
            "protectedParameters": [
                {"name": str(k), "value": "" if v is None else str(v)}
                for k, v in environment.items()
            ],
            "asyncExecution": False,
            "timeoutInSeconds": max(1, timeout),
            "treatFailureAsDeploymentFailure": False,
        },
    }
