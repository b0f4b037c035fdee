"""The fake ARM's world: VMs, long-running operations, run commands and injected faults.

Operations take real (wall-clock) time and finish lazily: every request first advances the
world, applying the effects of the operations whose time is up, so answers are always coherent
with what a client polling the operation would see. Like ARM, the VM's own state lags: for
`stale_window` seconds after an operation starts, GETs and listings still show the old
statuses (and the old status time), then the transitional ones, then the outcome with a new
time. Each VM has an operating system (`vm.FakeVm`: Linux namespaces with a private root,
booted at its first Run Command); a Run Command's script runs there as root while the
operation is in flight, and the operation completes when the script has ended. Stopping,
deallocating, restarting or resizing a VM shuts its OS down (its processes die, as on Azure);
deleting it removes its disk. A reboot or shutdown the VM's own OS asks for becomes Azure's
restart or power-off of that VM, so its power state moves as with the REST calls.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fake_arm.deployments import parameter_values, template_vms
from tests.fake_arm.files import FilesStore
from tests.fake_arm.resources import RunCommand, Vm, stamp
from tests.fake_arm.vm import FakeVm, Launcher

# what an operation does to its VM while it runs (provisioning, power) and when it succeeds
RUNNING_STATE = {
    "create": ("Creating", None),
    "update": ("Updating", "keep"),
    "start": ("Updating", "starting"),
    "powerOff": ("Updating", "stopping"),
    "restart": ("Updating", "starting"),
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
    script_done: bool = True  # a run command: whether its script has ended
    graceful: bool = True  # a power-off: with the OS's own shutdown
    resize: bool = False  # an update that changes the VM's size (Azure restarts it)
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
        #: seconds during which a VM still shows its old state after an operation starts
        self.stale_window = 0.05
        #: how a run command PUT is answered: 201 (created), 200 (updated) or 202 (accepted)
        self.run_command_status: int | None = None
        #: VM actions (start, powerOff, restart, deallocate) answered 200: done synchronously
        self.sync_actions: set[str] = set()
        #: how a DELETE of a VM is answered: 202 (accepted), or 200 / 204 (done synchronously)
        self.delete_status = 202
        #: where the VMs' disks and the fake Azure Files live
        self.sandbox_root = Path(tempfile.mkdtemp(prefix="fake-arm-"))
        #: the fake Azure Files (`files.FakeFiles` serves it; the VMs mount its shares)
        self.files = FilesStore(
            self.sandbox_root / "files", "fake-files-token-" + secrets.token_hex(8)
        )
        #: the fake VMs' operating systems, by (resource group, name), made at first use
        self.machines: dict[tuple[str, str], FakeVm] = {}
        self._launcher: Launcher | None = None
        #: the managed identity endpoint's secret header (IDENTITY_HEADER) and its token requests
        self.identity_header = secrets.token_hex(16)
        self.token_requests: list[str] = []
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
        """Apply the effects of every operation whose time is up (a run command's also waits
        for its script to end)."""
        now = time.monotonic()
        with self.lock:
            for op in list(self.operations.values()):
                if not op.done and not op.shown and now - op.started >= self.stale_window:
                    self._show(op)
                if not op.done and op.script_done and now - op.started >= op.duration:
                    self._finish(op)

    def _finish_deployment(self, op: Operation) -> None:
        """A template deployment is done: its VMs exist (and run); a VM whose size changed was
        resized, which restarts it (its OS goes down, as on Azure)."""
        record = self.deployments[(op.resource_group.lower(), op.vm.lower())]
        if op.outcome != "Succeeded":
            record["state"] = op.outcome
            op.error = {"code": "DeploymentFailed", "message": "the fake failed it on purpose"}
            return
        values = parameter_values(record["template"], record["parameters"])
        for name, location, properties in template_vms(record["template"], values, "westus"):
            key = (op.resource_group.lower(), name.lower())
            vm = self.vms.get(key)
            if vm is None:
                vm = Vm(op.resource_group, name, location, properties)
            elif size_of(vm.properties) != size_of(properties):
                self._os_off(key)
            vm.properties.update(properties)
            vm.settle("Succeeded", "running")
            self.vms[key] = vm
        record["state"] = "Succeeded"

    def _show(self, op: Operation) -> None:
        """The stale window is over: the VM now shows the operation running (and a restart's
        OS goes down now)."""
        op.shown = True
        vm = self.vms.get((op.resource_group.lower(), op.vm.lower()))
        if vm is not None and op.kind in RUNNING_STATE:
            provisioning, power = RUNNING_STATE[op.kind]
            vm.provisioning = provisioning
            if power != "keep":
                vm.power = power
        if op.kind == "restart":
            self._os_off((op.resource_group.lower(), op.vm.lower()))

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
            elif op.outcome != "Succeeded":
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
                machine = self.machines.pop(key, None)
                if machine is not None:
                    machine.destroy()
            else:
                vm.settle("Failed", vm.power)
            return
        if op.outcome == "Succeeded":
            power = SUCCEEDED_POWER[op.kind]
            if op.kind in ("powerOff", "deallocate") or op.resize:
                self._os_off(key, graceful=op.graceful)
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

    # -- the VMs' operating systems ------------------------------------------------------------

    def machine(self, resource_group: str, vm_name: str) -> FakeVm:
        """The VM's OS (its disk is made at first use)."""
        key = (resource_group.lower(), vm_name.lower())
        with self.lock:
            found = self.machines.get(key)
            if found is None:
                if self._launcher is None:
                    self._launcher = Launcher()
                home = self.sandbox_root / "vms" / f"{key[0]}--{key[1]}"
                found = FakeVm(home, vm_name, self.files.root, self._launcher)
                self.machines[key] = found
            return found

    def _os_off(self, key: tuple[str, str], *, graceful: bool = True) -> None:
        machine = self.machines.get(key)
        if machine is not None:
            machine.power_off(graceful=graceful)

    def run_script(self, op: Operation, rc: RunCommand, env: dict[str, str]) -> None:
        """Run a Run Command's script on its VM, off the request thread; the operation ends
        when the script has (and the VM's own reboot or shutdown then takes effect)."""
        op.script_done = False
        machine = self.machine(op.resource_group, op.vm)

        def started() -> None:
            with self.lock:
                rc.start_time = stamp()

        def work() -> None:
            time.sleep(self.stale_window)  # the agent picks the command up
            try:
                out, err, code = machine.run(
                    rc.script, env, timeout=rc.timeout, name=rc.name, on_start=started
                )
            except Exception as exc:  # the OS did not boot: the agent never answered
                out, err, code = "", f"fake-arm: {exc}\n", 1
            request = machine.take_power_request()
            with self.lock:
                rc.output, rc.error, rc.exit_code = out, err, code
                rc.start_time = rc.start_time or stamp()
                rc.end_time = stamp()
                rc.execution_state = "Succeeded" if code == 0 else "Failed"
                rc.provisioning = "Succeeded"
                op.script_done = True
                if request is not None and (op.resource_group.lower(), op.vm.lower()) in self.vms:
                    kind = "restart" if request == "reboot" else "powerOff"
                    vm = self.vms[(op.resource_group.lower(), op.vm.lower())]
                    self.start_operation(kind, op.resource_group, op.vm, vm.location)

        threading.Thread(target=work, name=f"run-command-{rc.name}", daemon=True).start()

    def shutdown(self) -> None:
        """Every VM's OS off, every disk removed (the fake ARM is stopping)."""
        with self.lock:
            machines, self.machines = list(self.machines.values()), {}
            launcher, self._launcher = self._launcher, None
        for machine in machines:
            machine.destroy()
        if launcher is not None:
            launcher.stop()
        shutil.rmtree(self.sandbox_root, ignore_errors=True)

    # -- operations ----------------------------------------------------------------------------

    def start_operation(
        self,
        kind: str,
        resource_group: str,
        vm_name: str,
        location: str,
        *,
        run_command: str | None = None,
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


def size_of(properties: dict[str, Any]) -> Any:
    return (properties.get("hardwareProfile") or {}).get("vmSize")
