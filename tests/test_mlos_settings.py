"""Service settings as upstream's: recursive template parameters and custom data (upstream's
azure_vm_services_test scenarios, with an AzureAuthService parent as upstream's fixtures), and
the default database at a stable per-user location (platformdirs), not the working directory.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from mlos_bench.environments.status import Status
from mlos_bench.services.config_persistence import ConfigPersistenceService
from mlos_bench.services.remote.azure import AzureAuthService

from backends.azure import StaticTokenCredential
from backends.mlos import AzureVMService, SimHostService
from backends.mlos.settings import DB_ENV, ServiceSettings, default_db_url
from tests.azure_support import RG, SUBSCRIPTION, TOKEN
from tests.fake_arm import FakeArm
from tests.mlos_support import CONFIG_DIR, FAST, azure_service

pytest_plugins = ["tests.azure_fixtures"]  # the fake ARM's fixtures
TEMPLATE = "services/remote/azure/arm-templates/azuredeploy-ubuntu-vm.jsonc"
CUSTOM_DATA = "services/remote/azure/cloud-init/alt-ssh.yml"


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-user data directory of the test's own (XDG_DATA_HOME), and no $FSM_DB."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    monkeypatch.delenv(DB_ENV, raising=False)
    return home


@pytest.fixture
def auth(data_home: Path) -> AzureAuthService:
    """Upstream's `azure_auth_service` fixture: mlos_bench's own auth service as the parent."""
    return AzureAuthService(config={}, global_config={}, parent=ConfigPersistenceService())


def test_recursive_template_params(auth: AzureAuthService) -> None:
    config = {
        "deploymentTemplatePath": TEMPLATE,
        "subscription": "TEST_SUB1",
        "resourceGroup": "TEST_RG1",
        "deploymentTemplateParameters": {
            "location": "$location",
            "vmMeta": "$vmName-$location",
            "vmNsg": "$vmMeta-nsg",
        },
    }
    global_config = {
        "deploymentName": "TEST_DEPLOYMENT1",
        "vmName": "test-vm",
        "location": "eastus",
    }
    service = AzureVMService(config, global_config, parent=auth)
    assert service.deploy_params["location"] == "eastus"
    assert service.deploy_params["vmMeta"] == "test-vm-eastus"
    assert service.deploy_params["vmNsg"] == "test-vm-eastus-nsg"


def test_custom_data(auth: AzureAuthService) -> None:
    config: dict[str, Any] = {
        "customDataFile": CUSTOM_DATA,
        "deploymentTemplatePath": TEMPLATE,
        "subscription": "TEST_SUB1",
        "resourceGroup": "TEST_RG1",
        "deploymentTemplateParameters": {"location": "eastus2"},
    }
    global_config = {"deploymentName": "TEST_DEPLOYMENT1", "vmName": "test-vm"}
    both = copy.deepcopy(config)
    both["deploymentTemplateParameters"]["customData"] = "DUMMY_CUSTOM_DATA"
    with pytest.raises(ValueError, match="Both customDataFile and customData"):
        AzureVMService(both, global_config, parent=auth)
    service = AzureVMService(config, global_config, parent=auth)
    assert service.deploy_params["customData"] == (CONFIG_DIR / CUSTOM_DATA).read_text()


def test_custom_data_is_deployed(
    arm: FakeArm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's text reaches the template's `customData` parameter in the deployment."""
    monkeypatch.setenv("FSM_TEST_AZURE_TOKEN", TOKEN)
    service = azure_service(
        arm,
        tmp_path,
        vmSpec=None,
        deploymentTemplatePath=TEMPLATE,
        customDataFile=CUSTOM_DATA,
        deploymentTemplateParameters={"location": "westus", "vmName": "cd1"},
    )
    try:
        status, result = service.provision_host({"vmName": "cd1"})
        assert status is Status.PENDING
        assert service.wait_host_deployment(result, is_setup=True)[0] is Status.SUCCEEDED
        sent = arm.world.deployment_bodies[-1]["properties"]["parameters"]
        assert sent["customData"] == {"value": (CONFIG_DIR / CUSTOM_DATA).read_text()}
        service.deprovision_host({"vmName": "cd1"})
    finally:
        service.close()


def test_the_default_database_is_per_user_not_per_directory(
    data_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `db` anywhere: the database is platformdirs' user data directory (private), so a
    teardown started from another directory finds the host a setup recorded."""
    expected = data_home / "fsm" / "mlos.db"
    assert default_db_url() == f"sqlite:///{expected}"
    assert (data_home / "fsm").stat().st_mode & 0o777 == 0o700
    setup_dir, teardown_dir = tmp_path / "setup", tmp_path / "teardown"
    setup_dir.mkdir()
    teardown_dir.mkdir()
    monkeypatch.chdir(setup_dir)
    config = {**FAST, "timeScale": 0.02}
    first = SimHostService(config, {}, parent=ConfigPersistenceService())
    try:
        status, result = first.provision_host({"vmName": "p1"})
        assert first.wait_host_deployment(result, is_setup=True)[0] is Status.SUCCEEDED
        host = first.hosts.current_host("sim:p1")
        assert host is not None
    finally:
        first.close()
    assert expected.exists() and expected.stat().st_mode & 0o777 == 0o600
    assert not list(setup_dir.iterdir())  # nothing in the working directory
    monkeypatch.chdir(teardown_dir)
    second = SimHostService(config, {}, parent=ConfigPersistenceService())
    try:
        status, result = second.deprovision_host({"vmName": "p1"})
        assert status is Status.PENDING
        assert second.wait_host_deployment(result, is_setup=False)[0] is Status.SUCCEEDED
        assert second.engine.get(host.id).state == "DEPROVISIONED"  # the same host entity
    finally:
        second.close()
    assert not list(teardown_dir.iterdir())


def test_the_database_setting_wins_over_the_environment_and_the_default(
    data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DB_ENV, "sqlite:////tmp/from-env.db")
    assert default_db_url() == "sqlite:////tmp/from-env.db"
    from_globals = ServiceSettings.from_config({}, {"db": "sqlite:////tmp/globals.db"})
    assert from_globals.db == "sqlite:////tmp/globals.db"
    both = ServiceSettings.from_config({"db": "sqlite:////tmp/config.db"}, {"db": "x"})
    assert both.db == "sqlite:////tmp/config.db"
    monkeypatch.delenv(DB_ENV)
    assert ServiceSettings.from_config({}, {}).db == f"sqlite:///{data_home}/fsm/mlos.db"
    assert os.environ.get(DB_ENV) is None


def test_the_credential_is_the_auth_services(
    arm: FakeArm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As upstream's AzureVMService: the parent auth service's credential (the shipped
    service-auth.jsonc) is the one used, and the service does not close what it does not own;
    a `credential` in the config still wins."""
    monkeypatch.setenv("FSM_TEST_AZURE_TOKEN", TOKEN)

    class Recording(StaticTokenCredential):
        def __init__(self) -> None:
            super().__init__(TOKEN)
            self.asked = 0
            self.closed = False

        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            self.asked += 1
            return super().get_token(*scopes, **kwargs)

        def close(self) -> None:
            self.closed = True

    credential = Recording()
    auth = AzureAuthService(config={}, global_config={}, parent=ConfigPersistenceService())
    monkeypatch.setattr(auth, "get_credential", lambda: credential)
    settings = {
        "db": f"sqlite:///{tmp_path}/fsm.db",
        **FAST,
        "subscription": SUBSCRIPTION,
        "resourceGroup": RG,
        "baseUrl": arm.base_url,
        "caBundle": str(arm.tls.ca),
    }
    service = AzureVMService(settings, {}, parent=auth)
    try:
        assert service.start_host({"vmName": "nowhere"})[0] is Status.FAILED  # one GET: 404
        assert credential.asked >= 1 and arm.world.unauthorized == 0
    finally:
        service.close()
    assert not credential.closed
    own = AzureVMService(
        {**settings, "credential": "static_token", "tokenEnv": "FSM_TEST_AZURE_TOKEN"},
        {},
        parent=auth,
    )
    try:
        asked = credential.asked
        assert own.start_host({"vmName": "nowhere"})[0] is Status.FAILED
        assert credential.asked == asked  # the config's credential, not the auth service's
    finally:
        own.close()
