"""The fake ARM's resources as ARM returns them: VMs (with instance views) and Run Commands."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def stamp() -> str:
    """Now, as ARM writes times."""
    return datetime.now(UTC).isoformat()


@dataclass
class Vm:
    resource_group: str
    name: str
    location: str
    properties: dict[str, Any]
    provisioning: str = "Creating"
    power: str | None = None
    vm_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    changed_at: str = field(default_factory=lambda: stamp())

    def settle(self, provisioning: str, power: str | None) -> None:
        self.provisioning, self.power, self.changed_at = provisioning, power, stamp()

    def resource(self, subscription: str, *, instance_view: bool) -> dict[str, Any]:
        properties = {**self.properties, "vmId": self.vm_id, "provisioningState": self.provisioning}
        if instance_view:
            when = self.changed_at
            statuses = [
                {
                    "code": f"ProvisioningState/{self.provisioning.lower()}",
                    "level": "Info" if self.provisioning != "Failed" else "Error",
                    "displayStatus": f"Provisioning {self.provisioning.lower()}",
                    "time": when,
                }
            ]
            if self.provisioning == "Failed":
                statuses[0]["code"] += "/InternalExecutionError"
            if self.power:
                statuses.append(
                    {
                        "code": f"PowerState/{self.power}",
                        "level": "Info",
                        "displayStatus": f"VM {self.power}",
                    }
                )
            properties["instanceView"] = {"statuses": statuses}
        return {
            "id": (
                f"/subscriptions/{subscription}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Compute/virtualMachines/{self.name}"
            ),
            "name": self.name,
            "type": "Microsoft.Compute/virtualMachines",
            "location": self.location,
            "properties": properties,
        }


@dataclass
class RunCommand:
    resource_group: str
    vm: str
    name: str
    location: str
    script: str
    parameter_names: list[str]
    protected_names: list[str]
    provisioning: str = "Creating"
    execution_state: str = "Running"
    exit_code: int | None = None
    output: str = ""
    error: str = ""
    start_time: str | None = None
    end_time: str | None = None
    timeout: int = 3600

    def resource(self, subscription: str, *, instance_view: bool) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "source": {"script": self.script},
            # Azure never echoes parameter values back; the fake does not either
            "parameters": [{"name": n, "value": ""} for n in self.parameter_names],
            "asyncExecution": False,
            "timeoutInSeconds": self.timeout,
            "provisioningState": self.provisioning,
        }
        if instance_view:
            properties["instanceView"] = {
                "executionState": self.execution_state,
                "executionMessage": "",
                "exitCode": self.exit_code,
                "output": self.output,
                "error": self.error,
                "startTime": self.start_time,
                "endTime": self.end_time,
                "statuses": None,
            }
        return {
            "name": self.name,
            "id": (
                f"/subscriptions/{subscription}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Compute/virtualMachines/{self.vm}/runCommands/{self.name}"
            ),
            "type": "Microsoft.Compute/virtualMachines/runCommands",
            "location": self.location,
            "properties": properties,
        }
