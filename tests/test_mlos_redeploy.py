"""provision_host deploys again on every call, as upstream's AzureVMService does, so a changed
`vmSize` tunable takes effect on a running VM (ARM updates it in place; a resize restarts it).
Upstream sends the deployment on every provision_host; ours used to answer SUCCEEDED for a
RUNNING host without sending anything, so the second trial of an optimization over `vmSize`
ran on the first trial's size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlos_bench.environments.status import Status
from mlos_bench.services.config_persistence import ConfigPersistenceService

from backends.mlos import AzureVMService, LocalHostService, SimHostService
from tests.azure_support import RG, TOKEN
from tests.fake_arm import FakeArm
from tests.mlos_support import (
    CONFIG_DIR,
    azure_service,
    events,
    local_service,
    shipped_environment,
    shipped_service,
    sim_service,
)
from tests.test_mlos_shipped import PROVISION, VM_OPS, azure_globals

pytest_plugins = ["tests.azure_fixtures"]  # the fake ARM's fixtures


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSM_TEST_AZURE_TOKEN", TOKEN)


def _provisioned(service: Any, params: dict[str, Any]) -> None:
    status, result = service.provision_host(params)
    if status.is_pending():
        status, _ = service.wait_host_deployment(result, is_setup=True)
    assert status is Status.SUCCEEDED


def test_a_running_vm_is_deployed_again_with_its_new_size(
    arm: FakeArm, tmp_path: Path, token: None
) -> None:
    service = azure_service(arm, tmp_path)
    try:
        _provisioned(service, {"vmName": "r1", "vmSize": "Standard_B2s"})
        machine = arm.world.machine(RG, "r1")
        machine.boot()  # the VM's OS is up (a script ran on it, say)
        status, result = service.provision_host({"vmName": "r1", "vmSize": "Standard_B4ms"})
        assert status is Status.PENDING  # upstream: the deployment is sent again
        assert service.wait_host_deployment(result, is_setup=True)[0] is Status.SUCCEEDED
        sizes = [b["properties"]["hardwareProfile"]["vmSize"] for b in arm.world.vm_bodies]
        assert sizes == ["Standard_B2s", "Standard_B4ms"]
        vm = arm.world.vms[(RG.lower(), "r1")]
        assert vm.properties["hardwareProfile"]["vmSize"] == "Standard_B4ms"
        assert not machine.up  # resized: Azure restarted it, its OS went down
        host = service.hosts.current_host(service._host_key({"vmName": "r1"}))
        assert host is not None and host.state == "RUNNING"
        assert [e[0] for e in events(service.engine, host.id)] == [
            "provision", "running", "provision", "running",
        ]  # fmt: skip
        service.deprovision_host({"vmName": "r1"})
    finally:
        service.close()


def test_the_shipped_vm_env_redeploys_its_template_each_trial(
    arm: FakeArm, tmp_path: Path, token: None
) -> None:
    """provision-ubuntu-vm.jsonc over two trials with different `vmSize` tunable values: two
    deployments of the shipped template, the second with the new size; then a real delete."""
    loader = ConfigPersistenceService({"config_path": [str(CONFIG_DIR)]})
    config = azure_globals(arm, tmp_path)
    service = shipped_service(loader, VM_OPS, AzureVMService, config, loader)
    assert isinstance(service, AzureVMService)
    env = shipped_environment(loader, PROVISION, config, service)
    try:
        with env as ctx:
            for size in ("Standard_B2ms", "Standard_B2s"):
                tunables = env.tunable_params
                tunables.assign({"vmSize": size})
                assert ctx.setup(tunables)
                assert arm.world.vms[(RG.lower(), "vm1")].properties["hardwareProfile"] == {
                    "vmSize": size
                }
            ctx.teardown()
        sent = [b["properties"]["parameters"]["vmSize"] for b in arm.world.deployment_bodies]
        assert sent == [{"value": "Standard_B2ms"}, {"value": "Standard_B2s"}]
        assert arm.world.vms == {}
    finally:
        service.close()


def test_the_simulator_redeploys_too(tmp_path: Path) -> None:
    service = sim_service(tmp_path)
    try:
        _provisioned(service, {"vmName": "s1"})
        _provisioned(service, {"vmName": "s1"})
        host = service.hosts.current_host("sim:s1")
        assert host is not None
        assert [e[0] for e in events(service.engine, host.id)] == [
            "provision", "running", "provision", "running",
        ]  # fmt: skip
    finally:
        service.close()


def test_this_machine_is_not_deployed_again(tmp_path: Path) -> None:
    """There is nothing to deploy for this machine: provisioning it finds it running."""
    service = local_service(tmp_path)
    try:
        _provisioned(service, {})
        _provisioned(service, {})
        host = service.hosts.current_host("local:localhost")
        assert host is not None
        assert [e[0] for e in events(service.engine, host.id)] == ["adopted_running"]
    finally:
        service.close()
    assert isinstance(service, LocalHostService) and not isinstance(service, SimHostService)
