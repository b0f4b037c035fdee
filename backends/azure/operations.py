"""Which SDK call carries out each command, to start it and to resume polling it.

Every command is a long-running ARM operation. Resuming calls the *same* `begin_*` method with
`continuation_token=`, so the recreated poller keeps polling the operation that was started
(its Azure-AsyncOperation URL), never a new one.

OS-level commands: `shutdown` is a power-off *with* the graceful OS shutdown Azure performs
(ACPI signal through the hypervisor; `force` skips it), and `reboot` is Azure's restart, which
also reboots the guest OS. A `shutdown -h now` through Run Command would race the agent that has
to report the command's result, so it could never end as SUCCEEDED reliably.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.polling import LROPoller
from azure.mgmt.compute import ComputeManagementClient

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


@dataclass(frozen=True)
class Target:
    """What an operation acts on; kept in the operation entity's data."""

    resource_group: str
    vm_name: str
    run_command: str | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Target:
        found = data.get("azure")
        if not isinstance(found, Mapping):
            raise ValueError("operation data has no 'azure' target")
        rg, vm, rc = found.get("resource_group"), found.get("vm_name"), found.get("run_command")
        if not (isinstance(rg, str) and rg and isinstance(vm, str) and vm):
            raise ValueError("operation target needs resource_group and vm_name")
        if rc is not None and not (isinstance(rc, str) and rc):
            raise ValueError("run_command must be a non-empty name")
        return cls(rg, vm, rc)

    def to_data(self) -> dict[str, str]:
        data = {"resource_group": self.resource_group, "vm_name": self.vm_name}
        if self.run_command:
            data["run_command"] = self.run_command
        return data


Begin = Callable[..., LROPoller[Any]]


def begin(
    client: ComputeManagementClient,
    command: str,
    target: Target,
    arguments: Mapping[str, Any],
) -> Begin:
    """The SDK call for `command`, bound to its target and arguments; call it with `polling=`
    (and `continuation_token=` to resume)."""
    vms = client.virtual_machines
    rg, vm = target.resource_group, target.vm_name
    force = bool(arguments.get("force", False))

    def bind(method: Callable[..., LROPoller[Any]], *args: Any, **kwargs: Any) -> Begin:
        return lambda **extra: method(*args, **kwargs, **extra)

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
        return bind(
            client.virtual_machine_run_commands.begin_create_or_update,
            rg,
            vm,
            target.run_command,
            body,
        )
    raise ValueError(f"unknown azure command {command!r}; known: {COMMANDS}")


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
            "timeoutInSeconds": timeout,
            "treatFailureAsDeploymentFailure": False,
        },
    }
