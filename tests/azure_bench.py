"""Running mlos_bench's shipped Azure configs over the fake ARM, as a user would.

Only classes are swapped: a service config whose class changes gets an overlay copy, generated
from the installed file with only `"class"` changed, in a directory that comes first on
mlos_bench's config search path (its working directory always does). Everything else is read
from the installed package unchanged, and mlos_bench's own services stay mlos_bench's:
`service-auth.jsonc` (AzureAuthService: DefaultAzureCredential, here finding the fake ARM's
managed identity endpoint) and `service-fileshare.jsonc` (AzureFileShareService, the real
azure-storage-file-share SDK, reaching the fake Azure Files through the HTTPS proxy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import json5
from mlos_bench.dict_templater import DictTemplater
from mlos_bench.services.base_service import Service
from mlos_bench.services.config_persistence import ConfigPersistenceService
from mlos_bench.services.local.local_exec import LocalExecService

from backends.mlos import AzureVMService
from tests.azure_support import SUBSCRIPTION, TOKEN
from tests.fake_arm import FakeArm
from tests.mlos_support import CONFIG_DIR, class_name

AUTH = "services/remote/azure/service-auth.jsonc"
VM_OPS = "services/remote/azure/service-linux-vm-ops.jsonc"
FILESHARE = "services/remote/azure/service-fileshare.jsonc"
EXPERIMENT = "experiments/experiment_RedisBench.jsonc"
STORAGE_KEY = "St0rage-key-never-in-the-db=="
#: what the root config's services are, in its order (root-azure-redis.jsonc)
ROOT_SERVICES = (AUTH, VM_OPS, FILESHARE)


def write_overlay(directory: Path, swaps: dict[str, type]) -> None:
    """Overlay copies of shipped service configs with only their class changed."""
    for relative, cls in swaps.items():
        config = json5.loads((CONFIG_DIR / relative).read_text())
        entries = config.get("services", [config])
        assert len(entries) == 1, relative
        entries[0]["class"] = class_name(cls)
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(config, indent=2))


def user_globals(arm: FakeArm, db: str | None, **extra: Any) -> dict[str, Any]:
    """What a user keeps in their own global config (upstream's tests name it
    `global_config_azure.jsonc`): the subscription, the storage key, faster polling — and, for
    this fake cloud, where ARM is (`baseUrl`, `caBundle`) and our database."""
    values: dict[str, Any] = {
        "subscription": SUBSCRIPTION,
        "storageAccountKey": STORAGE_KEY,
        "pollInterval": 0.05,
        "pollTimeout": 120,
        "requestTimeout": 10,
        "refreshScale": 0.02,
        "baseUrl": arm.base_url,
        "caBundle": str(arm.tls.ca),
    }
    if db is not None:
        values["db"] = db
    return {**values, **extra}


def experiment_globals(arm: FakeArm, db: str | None, **extra: Any) -> dict[str, Any]:
    """The globals mlos_bench builds from `--globals global_config_azure.jsonc
    experiment_RedisBench.jsonc` (the shipped experiment file, then `$var` expansion)."""
    merged = {**user_globals(arm, db), **json5.loads((CONFIG_DIR / EXPERIMENT).read_text())}
    merged.setdefault("trial_id", 1)
    merged.update(extra)
    expanded = DictTemplater(merged).expand_vars(use_os_env=False)
    assert isinstance(expanded, dict)
    return expanded


def prepare_cloud(arm: FakeArm, config: dict[str, Any]) -> None:
    """What exists before a run: the storage account's file share (made by setup-rg)."""
    arm.world.files.create_share(
        config["storageAccountName"], config["storageFileShareName"], config["storageAccountKey"]
    )


def client_environment(arm: FakeArm) -> dict[str, str]:
    """How a process of the user's finds the fake cloud (see `FakeArm.client_environment`)."""
    return {**arm.client_environment(), "FSM_TEST_AZURE_TOKEN": TOKEN}


def load_root_services(
    overlay: Path, config: dict[str, Any]
) -> tuple[ConfigPersistenceService, Service, AzureVMService]:
    """The root config's services as mlos_bench's launcher loads them (a LocalExecService
    parent, then the included service files, overlay first), and our AzureVMService."""
    loader = ConfigPersistenceService({"config_path": [str(overlay)]})
    local = LocalExecService(parent=loader)
    bundle = loader.load_services(list(ROOT_SERVICES), config, local)
    ours = bundle.export()["provision_host"].__self__
    assert isinstance(ours, AzureVMService)
    return loader, bundle, ours


def composite(directory: Path, name: str, children: list[str], **const_args: Any) -> Path:
    """A composite of shipped environments, as root-azure-redis.jsonc composes them."""
    path = directory / f"{name}.jsonc"
    config = {
        "name": name,
        "class": "mlos_bench.environments.CompositeEnv",
        "config": {"const_args": const_args, "include_children": children},
    }
    path.write_text(json.dumps(config, indent=2))
    return path
