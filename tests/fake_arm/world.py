"""The fake ARM's world: VMs, long-running operations, run commands and injected faults.

Operations take real (wall-clock) time and finish lazily: every request first advances the
world, applying the effects of the operations whose time is up, so answers are always coherent
with what a client polling the operation would see. Like ARM, the VM's own state lags: for
`stale_window` seconds after an operation starts, GETs and listings still show the old
statuses (and the old status time), then the transitional ones, then the outcome with a new
time. Run commands run their script in a sandboxed bash (`runner`).
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fake_arm.deployments import parameter_values, template_vms
from tests.fake_arm.resources import RunCommand, Vm, stamp
from tests.fake_arm.runner import run_script, sandbox

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
    shown: bool = False  # whether the VM shows this operation yet (after the stale window)
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
        #: seconds during which a VM still shows its old state after an operation starts
        self.stale_window = 0.05
        #: how a run command PUT is answered: 201 (created), 200 (updated) or 202 (accepted)
        self.run_command_status: int | None = None
        #: VM actions (start, powerOff, restart, deallocate) answered 200: done synchronously
        self.sync_actions: set[str] = set()
        #: how a DELETE of a VM is answered: 202 (accepted), or 200 / 204 (done synchronously)
        self.delete_status = 202
        #: where each VM's sandbox (home, cwd, TMPDIR of its run commands) lives
        self.sandbox_root = Path(tempfile.mkdtemp(prefix="fake-arm-vms-"))
        #: the fake Azure Files: <share_root>/<account>/<share>/...
        self.share_root = self.sandbox_root / "shares"
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.deployment_bodies: list[dict[str, Any]] = []

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
            for op in list(self.operations.values()):
                if not op.done and not op.shown and now - op.started >= self.stale_window:
                    self._show(op)
                if not op.done and now - op.started >= op.duration:
                    self._finish(op)

    def _finish_deployment(self, op: Operation) -> None:
        """A template deployment is done: its VMs exist (and run)."""
        record = self.deployments[(op.resource_group.lower(), op.vm.lower())]
        if op.outcome != "Succeeded":
            record["state"] = op.outcome
            op.error = {"code": "DeploymentFailed", "message": "the fake failed it on purpose"}
            return
        values = parameter_values(record["template"], record["parameters"])
        for name, location, properties in template_vms(record["template"], values, "westus"):
            key = (op.resource_group.lower(), name.lower())
            vm = self.vms.get(key) or Vm(op.resource_group, name, location, properties)
            vm.properties.update(properties)
            vm.settle("Succeeded", "running")
            self.vms[key] = vm
        record["state"] = "Succeeded"

    def _show(self, op: Operation) -> None:
        """The stale window is over: the VM now shows the operation running."""
        op.shown = True
        vm = self.vms.get((op.resource_group.lower(), op.vm.lower()))
        if vm is not None and op.kind in RUNNING_STATE:
            provisioning, power = RUNNING_STATE[op.kind]
            vm.provisioning = provisioning
            if power != "keep":
                vm.power = power

    def _finish(self, op: Operation) -> None:
        if not op.shown:
            self._show(op)
        op.done = True
        if op.kind == "deployment":
            self._finish_deployment(op)
            return
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
                rc.start_time = stamp()
                home = sandbox(self.sandbox_root, op.vm)
                rc.output, rc.error, rc.exit_code = run_script(
                    rc.script, env, home=home, share_root=self.share_root, timeout=rc.timeout
                )
                rc.end_time = stamp()
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
                vm.settle("Failed", vm.power)
            return
        if op.outcome == "Succeeded":
            power = SUCCEEDED_POWER[op.kind]
            vm.settle("Succeeded", op.previous_power if power == "keep" else power)
        elif op.outcome == "Canceled":
            vm.settle("Succeeded" if op.kind != "create" else "Canceled", op.previous_power)
        else:
            vm.settle("Failed", op.previous_power)
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
            self.operations[op.id] = op
            if self.stale_window <= 0:
                self._show(op)
            return op

    def finish_now(self, op: Operation) -> None:
        """Complete an operation at once (a request answered synchronously)."""
        with self.lock:
            op.duration = 0.0
            self._finish(op)

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
