"""The fake ARM's world: VMs, long-running operations, run commands and injected faults.

Operations take real (wall-clock) time and finish lazily: every request first advances the
world, applying the effects of the operations whose time is up, so answers are always coherent
with what a client polling the operation would see.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

# what an operation does to its VM while it runs (provisioning, power) and when it succeeds
RUNNING_STATE = {
    "create": ("Creating", None),
    "update": ("Updating", "keep"),
    "start": ("Updating", "starting"),
    "powerOff": ("Updating", "stopping"),
    "restart": ("Updating", "running"),
    "deallocate": ("Updating", "deallocating"),
    "delete": ("Deleting", "keep"),
}
SUCCEEDED_POWER = {
    "create": "running",
    "update": "keep",
    "start": "running",
    "powerOff": "stopped",
    "restart": "running",
    "deallocate": "deallocated",
}


@dataclass
class Vm:
    resource_group: str
    name: str
    location: str
    properties: dict[str, Any]
    provisioning: str = "Creating"
    power: str | None = None
    vm_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def resource(self, subscription: str, *, instance_view: bool) -> dict[str, Any]:
        properties = {**self.properties, "vmId": self.vm_id, "provisioningState": self.provisioning}
        if instance_view:
            when = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
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

    def resource(self, subscription: str, *, instance_view: bool) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "source": {"script": self.script},
            # Azure never echoes parameter values back; the fake does not either
            "parameters": [{"name": n, "value": ""} for n in self.parameter_names],
            "asyncExecution": False,
            "timeoutInSeconds": 3600,
            "provisioningState": self.provisioning,
        }
        if instance_view:
            properties["instanceView"] = {
                "executionState": self.execution_state,
                "executionMessage": "",
                "exitCode": self.exit_code,
                "output": self.output,
                "error": self.error,
                "startTime": "2026-01-01T00:00:00+00:00",
                "endTime": "2026-01-01T00:00:01+00:00",
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


@dataclass
class Operation:
    id: str
    kind: str
    resource_group: str
    vm: str
    location: str
    started: float
    duration: float
    outcome: str  # Succeeded / Failed / Canceled
    previous_power: str | None = None
    run_command: str | None = None
    done: bool = False
    error: dict[str, str] | None = None
    polls: int = 0


@dataclass
class Fault:
    status: int
    method: str | None = None
    path: re.Pattern[str] | None = None
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class Request:
    method: str
    path: str
    query: str
    at: float


class World:
    """Everything the fake knows; every method takes the lock."""

    def __init__(self, subscription: str, token: str) -> None:
        self.subscription = subscription
        self.token = token
        self.lock = threading.RLock()
        self.vms: dict[tuple[str, str], Vm] = {}
        self.operations: dict[str, Operation] = {}
        self.run_commands: dict[tuple[str, str, str], RunCommand] = {}
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self.durations: dict[str, float] = {}
        self.default_duration = 0.2
        self.outcomes: dict[str, str] = {}
        self.page_size = 50
        self.unauthorized = 0
        self.run_command_bodies: list[dict[str, Any]] = []
        self.vm_bodies: list[dict[str, Any]] = []
        self._env_of: dict[str, dict[str, str]] = {}  # a run command's environment, until it runs

    # -- faults and knobs ----------------------------------------------------------------------

    def inject(
        self,
        status: int,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """Answer the next `times` matching requests with this response instead."""
        with self.lock:
            pattern = re.compile(path) if path else None
            self.faults.append(Fault(status, method, pattern, times, dict(headers or {}), body))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times <= 0:
                    continue
                if fault.method and fault.method != method:
                    continue
                if fault.path and not fault.path.search(path):
                    continue
                fault.times -= 1
                return fault
            return None

    def delete_behind_our_back(self, resource_group: str, name: str) -> None:
        with self.lock:
            self.vms.pop((resource_group.lower(), name.lower()), None)

    def count(self, method: str, pattern: str) -> int:
        with self.lock:
            rx = re.compile(pattern)
            return sum(1 for r in self.requests if r.method == method and rx.search(r.path))

    # -- time ----------------------------------------------------------------------------------

    def advance(self) -> None:
        """Apply the effects of every operation whose time is up."""
        now = time.monotonic()
        with self.lock:
            for op in self.operations.values():
                if not op.done and now - op.started >= op.duration:
                    self._finish(op)

    def _finish(self, op: Operation) -> None:
        op.done = True
        key = (op.resource_group.lower(), op.vm.lower())
        vm = self.vms.get(key)
        if op.kind == "runCommand":
            rc = self.run_commands.get((*key, (op.run_command or "").lower()))
            if rc is None or vm is None:
                op.outcome = "Failed"
                op.error = {"code": "NotFound", "message": "the VM is gone"}
                return
            if op.outcome == "Succeeded":
                env = {n: "" for n in rc.parameter_names + rc.protected_names}
                env.update(self._env_of.pop(op.id, {}))
                rc.output, rc.error, rc.exit_code = run_script(rc.script, env)
                rc.execution_state = "Succeeded" if rc.exit_code == 0 else "Failed"
                rc.provisioning = "Succeeded"
            else:
                rc.provisioning, rc.execution_state = "Failed", op.outcome
                op.error = {"code": "VMAgentStatusCommunicationError", "message": "no agent"}
            return
        if vm is None:
            if op.kind != "delete":
                op.outcome = "Failed"
                op.error = {"code": "NotFound", "message": f"the VM {op.vm} does not exist"}
            return
        if op.kind == "delete":
            if op.outcome == "Succeeded":
                del self.vms[key]
            else:
                vm.provisioning = "Failed"
            return
        if op.outcome == "Succeeded":
            vm.provisioning = "Succeeded"
            power = SUCCEEDED_POWER[op.kind]
            vm.power = op.previous_power if power == "keep" else power
        elif op.outcome == "Canceled":
            vm.provisioning = "Succeeded" if op.kind != "create" else "Canceled"
            vm.power = op.previous_power
        else:
            vm.provisioning = "Failed"
            vm.power = op.previous_power
            op.error = {
                "code": "OSProvisioningTimedOut"
                if op.kind == "create"
                else "InternalExecutionError",
                "message": f"the fake failed the {op.kind} operation on purpose",
            }

    # -- operations ----------------------------------------------------------------------------

    def start_operation(
        self,
        kind: str,
        resource_group: str,
        vm_name: str,
        location: str,
        *,
        run_command: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Operation:
        with self.lock:
            vm = self.vms.get((resource_group.lower(), vm_name.lower()))
            op = Operation(
                id=str(uuid.uuid4()),
                kind=kind,
                resource_group=resource_group,
                vm=vm_name,
                location=location,
                started=time.monotonic(),
                duration=self.durations.get(kind, self.default_duration),
                outcome=self.outcomes.get(kind, "Succeeded"),
                previous_power=vm.power if vm else None,
                run_command=run_command,
            )
            if env:
                self._env_of[op.id] = dict(env)
            if vm is not None and kind in RUNNING_STATE:
                provisioning, power = RUNNING_STATE[kind]
                vm.provisioning = provisioning
                if power != "keep":
                    vm.power = power
            self.operations[op.id] = op
            return op

    def busy(self, resource_group: str, vm_name: str) -> bool:
        """Whether a VM operation (not a run command) is still running on this VM."""
        with self.lock:
            return any(
                not op.done
                and op.kind != "runCommand"
                and (op.resource_group.lower(), op.vm.lower())
                == (resource_group.lower(), vm_name.lower())
                for op in self.operations.values()
            )


_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def run_script(script: str, env: dict[str, str]) -> tuple[str, str, int]:
    """A tiny shell: `echo TEXT` (with $VAR), `echo TEXT >&2`, `exit N`, `true`, `false`."""
    out: list[str] = []
    err: list[str] = []
    status = 0
    for raw in script.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), line)
        word, _, rest = line.partition(" ")
        if word == "exit":
            return "".join(out), "".join(err), int(rest.strip() or status)
        if word == "echo":
            to_err = rest.rstrip().endswith(">&2")
            text = rest.rstrip()[:-3].rstrip() if to_err else rest
            text = text.strip().strip("'\"")
            (err if to_err else out).append(text + "\n")
            status = 0
        elif word in ("true", ":"):
            status = 0
        elif word == "false":
            status = 1
        else:
            err.append(f"fake-arm: {word}: command not found\n")
            status = 127
    return "".join(out), "".join(err), status
