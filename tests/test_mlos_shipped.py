"""mlos_bench 0.6.2's shipped configs, loaded from the installed package (not copies) with only
the service class swapped, run through mlos_bench's own Environment classes over the fake ARM
(and the simulator where that applies). Values a user keeps in their global config (the
subscription, the endpoint, the VM name, ...) come from globals, as mlos_bench merges them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from mlos_bench.services.config_persistence import ConfigPersistenceService

from backends.mlos import AzureVMService, EngineHostService, LocalHostService, SimHostService
from tests.azure_support import RG, SUBSCRIPTION, TOKEN, database_text
from tests.fake_arm import FakeArm
from tests.mlos_support import CONFIG_DIR, shipped_environment, shipped_service

pytest_plugins = ["tests.azure_fixtures"]  # the fake ARM's fixtures

VM_OPS = "services/remote/azure/service-linux-vm-ops.jsonc"
PROVISION = "environments/vm/azure/provision-ubuntu-vm.jsonc"
LOCAL_EXEC = "services/local/local_exec_service.jsonc"
SSH_HOST = "services/remote/ssh/ssh_host_service.jsonc"
SECRET = "St0rage-key-never-in-the-db"


@pytest.fixture
def loader() -> ConfigPersistenceService:
    return ConfigPersistenceService({"config_path": [str(CONFIG_DIR)]})


def azure_globals(arm: FakeArm, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """What a user's global config holds for the shipped Azure service config."""
    return {
        "db": f"sqlite:///{tmp_path}/fsm.db",
        "subscription": SUBSCRIPTION,
        "resourceGroup": RG,
        "location": "westus",
        "vmName": "vm1",
        "vmSize": "Standard_B2s",
        "storageAccountName": "acct",
        "storageFileShareName": "share",
        "storageAccountKey": SECRET,
        "virtualNetworkName": "vnet",
        "subnetName": "subnet",
        "ubuntuOSVersion": "22_04-lts",
        # the tunable groups the shipped environments name by variable (as its experiments do)
        "tunable_params_map": {"provision": ["azure-vm"], "linux-boot": ["linux-kernel-boot"]},
        "pollInterval": 0.05,
        "pollTimeout": 60,
        "requestTimeout": 10,
        "refreshScale": 0.02,
        # ours: where the fake ARM is and how to authenticate to it
        "baseUrl": arm.base_url,
        "caBundle": str(arm.tls.ca),
        "credential": "static_token",
        "tokenEnv": "FSM_TEST_AZURE_TOKEN",
        **extra,
    }


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSM_TEST_AZURE_TOKEN", TOKEN)


@pytest.mark.parametrize(
    ("relative", "cls"),
    [
        (VM_OPS, AzureVMService),
        (VM_OPS, SimHostService),
        (LOCAL_EXEC, LocalHostService),
        (LOCAL_EXEC, SimHostService),
        (SSH_HOST, LocalHostService),
        (SSH_HOST, SimHostService),
    ],
)
def test_every_key_of_the_shipped_service_configs_is_accepted(
    loader: ConfigPersistenceService,
    arm: FakeArm,
    tmp_path: Path,
    token: None,
    caplog: pytest.LogCaptureFixture,
    relative: str,
    cls: type[EngineHostService],
) -> None:
    caplog.set_level(logging.INFO, logger="backends.mlos.settings")
    service = shipped_service(loader, relative, cls, azure_globals(arm, tmp_path), loader)
    assert isinstance(service, cls)
    try:
        raw = loader.load_config(str(CONFIG_DIR / relative), schema_type=None)
        keys = set((raw["services"][0] if "services" in raw else raw).get("config") or {})
        ignored = keys & set(cls.IGNORED)
        for key in ignored:  # accepted, not applicable here: said so in the log
            assert f"config key {key!r} is accepted and ignored" in caplog.text
        assert keys - ignored <= cls.KEYS | {"pollInterval", "pollTimeout"}
    finally:
        service.close()


def test_provision_ubuntu_vm_deploys_the_shipped_template(
    loader: ConfigPersistenceService, arm: FakeArm, tmp_path: Path, token: None
) -> None:
    """VMEnv + service-linux-vm-ops.jsonc: an ARM deployment of azuredeploy-ubuntu-vm.jsonc
    (azure-mgmt-resource), then a real delete at teardown."""
    config = azure_globals(arm, tmp_path)
    service = shipped_service(loader, VM_OPS, AzureVMService, config, loader)
    assert isinstance(service, AzureVMService)
    env = shipped_environment(loader, PROVISION, config, service)
    with env as ctx:
        assert ctx.setup(env.tunable_params)
        assert (RG.lower(), "vm1") in arm.world.vms  # the template's VM, made by the deployment
        status, _, _ = ctx.run()
        assert status.is_ready()  # no run script: READY, as mlos_bench reports it
        ctx.teardown()
    assert arm.world.vms == {}  # no VM left behind
    body = arm.world.deployment_bodies[-1]["properties"]
    assert body["mode"] == "Incremental" and body["template"]["resources"]
    assert body["parameters"]["vmName"] == {"value": "vm1"}
    assert body["parameters"]["vmSize"] == {"value": "Standard_B4ms"}  # the tunable's default
    assert arm.world.count("PUT", r"/deployments/vm1-deployment$") == 1
    host = service.hosts.current_host(service._host_key({"vmName": "vm1"}))
    assert host is not None and host.state == "DEPROVISIONED"
    assert SECRET not in database_text(service.engine)
    assert service.engine.verify() == []
    service.close()


def test_provision_ubuntu_vm_over_the_simulator(
    loader: ConfigPersistenceService, tmp_path: Path
) -> None:
    config = {"db": f"sqlite:///{tmp_path}/sim.db", "vmName": "vm1", "subscription": "s"}
    config |= {"resourceGroup": "rg", "pollInterval": 0.02, "refreshScale": 0.02}
    config |= {"tunable_params_map": {"provision": ["azure-vm"]}}
    service = shipped_service(loader, VM_OPS, SimHostService, {**config, "timeScale": 0.02}, loader)
    env = shipped_environment(loader, PROVISION, config, service)
    with env as ctx:
        assert ctx.setup(env.tunable_params)
        ctx.teardown()
    assert isinstance(service, SimHostService)
    host = service.hosts.current_host("sim:vm1")
    assert host is not None and host.state == "DEPROVISIONED"
    service.close()
