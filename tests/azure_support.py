"""Helpers for the Azure backend's tests: the real SDK client pointed at the fake ARM."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.azure import AzureBackend, AzureSettings, StaticTokenCredential
from backends.hostctl import HostControl, Progress, Ticket
from fsm import Engine, Entity
from fsm.worker import Worker
from tests.components import unavailable
from tests.fake_arm import FakeArm

SUBSCRIPTION = "00000000-0000-0000-0000-00000000c0de"
TOKEN = "fake-arm-bearer-token-5ecret"  # the bearer token the fake expects
RG = "fsm-test-rg"
SPEC: dict[str, Any] = {
    "properties": {
        "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
        "storageProfile": {
            "imageReference": {
                "publisher": "Canonical",
                "offer": "0001-com-ubuntu-server-jammy",
                "sku": "22_04-lts-gen2",
                "version": "latest",
            },
            "osDisk": {"createOption": "FromImage", "managedDisk": {}},
        },
        "osProfile": {
            "computerName": "vm",
            "adminUsername": "azureuser",
            "adminPassword": "Sup3r-secret-admin-pw!",
        },
        "networkProfile": {
            "networkInterfaces": [
                {
                    "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers"
                    "/Microsoft.Network/networkInterfaces/nic0",
                    "properties": {"primary": True},
                }
            ]
        },
    }
}


def settings_for(arm: FakeArm, **overrides: Any) -> AzureSettings:
    """Settings pointing the real SDK at the fake; quick retries so faults end fast."""
    values: dict[str, Any] = {
        "subscription_id": SUBSCRIPTION,
        "base_url": arm.base_url,
        "ca_bundle": str(arm.tls.ca),
        "retry_total": 1,
        "retry_backoff_factor": 0.01,
        "retry_backoff_max": 0.05,
        "timeout": 10.0,
        "command_retries": 1,
        "max_retry_after": 0.05,
        "location": "westus",
    }
    values.update(overrides)
    return AzureSettings(**values)


@dataclass
class Rig:
    """An engine on a real database, a worker with the Azure backend, and HostControl."""

    engine: Engine
    backend: AzureBackend
    worker: Worker
    hosts: HostControl
    arm: FakeArm

    def host(self, vm: str) -> Entity:
        return self.hosts.host_for(
            f"azure:{RG}/{vm}", {"azure": {"resource_group": RG, "vm_name": vm}}
        )

    def submit(self, host_id: str, command: str, **arguments: Any) -> Ticket:
        call = {"spec": SPEC} if command == "provision" else {}
        vm = self.engine.get(host_id).data["azure"]
        return self.hosts.submit(
            host_id,
            command,
            arguments,
            call_arguments=call,
            operation_data={"azure": vm},
            time_limit=60,
        )

    def wait(self, ticket: Ticket, timeout: float = 15.0) -> Progress:
        progress, _ = self.hosts.wait(ticket, timeout=timeout, interval=0.02)
        return progress

    def tick_until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "condition not reached in time"
            self.worker.tick()
            time.sleep(0.02)

    def state(self, entity_id: str) -> str:
        return self.engine.get(entity_id).state


def make_rig(arm: FakeArm, db_url: str, **overrides: Any) -> Rig:
    engine = Engine(db_url, refresh_scale=0.02)
    backend = AzureBackend(settings_for(arm, **overrides), credential=StaticTokenCredential(TOKEN))
    worker = Worker(engine, [backend])
    return Rig(engine, backend, worker, HostControl(engine, worker, backend), arm)


def database_text(engine: Engine) -> str:
    """Every entity's data and every transition's payload, as one string to search."""
    parts: list[str] = []
    for entity in engine.list_entities():
        parts.append(repr(entity.data))
        parts.extend(repr(t.payload) for t in engine.history(entity.id))
    return "\n".join(parts)


#: what the fake VMs' scripts run for real (Debian packages; .ci/components.sh installs them)
VM_PROGRAMS = ("fio", "redis-server", "redis-benchmark", "redis-cli", "sudo")


def require_fake_vms() -> None:
    """Skip (fail in CI) when this machine cannot run fake VMs: root, namespaces, the tools."""
    import shutil

    from tests.fake_arm.vm import missing_tools

    missing = missing_tools() + [p for p in VM_PROGRAMS if shutil.which(p) is None]
    if not missing:
        return
    message = f"fake VMs need {', '.join(missing)} (.ci/components.sh installs them)"
    unavailable(message)
