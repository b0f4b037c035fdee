"""Helpers for the mlos_bench tests: services on a temporary database, environments by config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlos_bench
import pytest
from mlos_bench.environments.base_environment import Environment
from mlos_bench.environments.composite_env import CompositeEnv
from mlos_bench.services.base_fileshare import FileShareService
from mlos_bench.services.base_service import Service
from mlos_bench.services.config_persistence import ConfigPersistenceService
from mlos_bench.tunables.tunable_groups import TunableGroups

from backends.mlos import AzureVMService, LocalHostService, SimHostService
from fsm import Engine
from tests.azure_support import RG, SPEC, SUBSCRIPTION
from tests.fake_arm import FakeArm

FAST = {"pollInterval": 0.02, "pollTimeout": 30, "refreshScale": 0.02}
HOST = "mlos_bench.environments.remote.HostEnv"
OS = "mlos_bench.environments.remote.OSEnv"
REMOTE = "mlos_bench.environments.remote.RemoteEnv"
APP = {
    "setup": ["echo setting up"],
    "run": ["echo score=42"],
    "teardown": ["echo tearing down"],
    "results_stdout_pattern": r"(\w+)=(\d+)",
}


def sim_service(tmp_path: Path, **config: Any) -> SimHostService:
    settings = {"db": f"sqlite:///{tmp_path}/sim.db", **FAST, "timeScale": 0.05, **config}
    return SimHostService(settings, {}, parent=ConfigPersistenceService())


def local_service(tmp_path: Path, **config: Any) -> LocalHostService:
    settings = {"db": f"sqlite:///{tmp_path}/local.db", **FAST, **config}
    return LocalHostService(settings, {}, parent=ConfigPersistenceService())


def azure_service(arm: FakeArm, tmp_path: Path, **config: Any) -> AzureVMService:
    """Needs FSM_TEST_AZURE_TOKEN in the environment (the static credential reads it)."""
    settings = {
        "db": f"sqlite:///{tmp_path}/azure.db",
        **FAST,
        "subscription": SUBSCRIPTION,
        "resourceGroup": RG,
        "location": "westus",
        "vmSpec": SPEC,
        "baseUrl": arm.base_url,
        "caBundle": str(arm.tls.ca),
        "credential": "static_token",
        "tokenEnv": "FSM_TEST_AZURE_TOKEN",
        "requestTotalRetries": 1,
        "requestBackoffFactor": 0.01,
        **config,
    }
    return AzureVMService(settings, {}, parent=ConfigPersistenceService())


def environment(cls: type[Environment], service: Service, config: dict[str, Any]) -> Environment:
    return cls(name=cls.__name__, config=config, tunables=TunableGroups(), service=service)


def composite(service: Service, vm: str) -> Environment:
    """HostEnv + OSEnv + RemoteEnv under one CompositeEnv, as an mlos_bench config would."""
    config = {
        "const_args": {"vmName": vm},
        "children": [
            {"name": "host", "class": HOST, "config": {"required_args": ["vmName"]}},
            {"name": "os", "class": OS, "config": {"required_args": ["vmName"]}},
            {"name": "app", "class": REMOTE, "config": {"required_args": ["vmName"], **APP}},
        ],
    }
    return CompositeEnv(name="bench", config=config, tunables=TunableGroups(), service=service)


#: a host command is confirmed by the listing (`running`, ...) or, whichever the worker sees
#: first, by its operation's success in the commit that records it (fsm.cascade): one fact
CONFIRMED_BY = {
    "RUNNING": "running",
    "STOPPED": "stopped",
    "DEALLOCATED": "deallocated",
    "DEPROVISIONED": "deleted",
}


def confirmed(event: str, to_state: str) -> str:
    """The observation an `operation_succeeded` stands for."""
    return CONFIRMED_BY[to_state] if event == "operation_succeeded" else event


def events(engine: Engine, entity_id: str) -> list[tuple[str, str, str]]:
    return [
        (confirmed(t.event, t.to_state), t.to_state, t.source) for t in engine.history(entity_id)
    ]


CONFIG_DIR = Path(mlos_bench.__file__).parent / "config"  # the shipped configs, not copies


class HomeFileShare(FileShareService):
    """Files of a host's home directory (config `home`): what upstream's SshFileShareService
    does with scp against the SSH user's home, for hosts whose home is on this machine (our
    LocalHostService's `cwd`, a simulated host's home). Paths are relative to the home."""

    def _validate_json_config(self, config: dict[str, Any]) -> None:
        assert set(config) <= {"home"}, f"unknown file share config keys {set(config)}"

    def _path(self, remote_path: str) -> Path:
        home = Path(self.config["home"]).resolve()
        path = (home / remote_path).resolve()
        assert path == home or home in path.parents, f"{remote_path} leaves the home"
        return path

    def upload(
        self, params: dict[str, Any], local_path: str, remote_path: str, recursive: bool = True
    ) -> None:
        super().upload(params, local_path, remote_path, recursive)
        target = self._path(remote_path)
        if Path(local_path).is_dir():
            shutil.copytree(local_path, target, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_path, target)

    def download(
        self, params: dict[str, Any], remote_path: str, local_path: str, recursive: bool = True
    ) -> None:
        super().download(params, remote_path, local_path, recursive)
        source = self._path(remote_path)
        if not source.exists():
            raise FileNotFoundError(remote_path)
        if source.is_dir():
            shutil.copytree(source, local_path, dirs_exist_ok=True)
        else:
            Path(local_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, local_path)


def shipped_environment(
    loader: ConfigPersistenceService, relative: str, config: dict[str, Any], service: Service
) -> Environment:
    """An environment config shipped with mlos_bench, loaded from the installed package."""
    return loader.load_environment(
        str(CONFIG_DIR / relative), TunableGroups(), global_config=config, service=service
    )


def class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def shipped_service(
    loader: ConfigPersistenceService,
    relative: str,
    cls: type,
    global_config: dict[str, Any],
    parent: Service,
) -> Service:
    """A service config shipped with mlos_bench, loaded from the installed package, with only
    its class swapped for `cls`."""
    raw = loader.load_config(str(CONFIG_DIR / relative), schema_type=None)
    entries = raw.get("services", [raw])
    assert len(entries) == 1
    swapped = {**entries[0], "class": class_name(cls)}
    bundle = loader.build_service(config=swapped, global_config=global_config, parent=parent)
    # mlos_bench hands environments a bundle of every service's methods; ours is behind it
    method = bundle.export().get("provision_host") or bundle.export().get("upload")
    ours = getattr(method, "__self__", bundle)
    assert isinstance(ours, cls), (ours, cls)
    return ours


def scratch_repo(path: Path) -> dict[str, str]:
    """A throw-away git repository at `path` (not the project's) for the experiment metadata
    mlos_bench records (the root environment config's git commit), and the environment that
    names it (GIT_DIR / GIT_WORK_TREE: for configs that live outside it, e.g. installed ones)."""
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is needed: mlos_bench records the config's git commit")
    quiet: dict[str, Any] = {"check": True, "capture_output": True, "cwd": path}
    subprocess.run([git, "init", "-q"], **quiet)
    subprocess.run([git, "remote", "add", "origin", "https://example.invalid/bench.git"], **quiet)
    identity = ["-c", "user.name=fsm tests", "-c", "user.email=tests@example.invalid"]
    subprocess.run([git, *identity, "commit", "-q", "--allow-empty", "-m", "scratch"], **quiet)
    return {"GIT_DIR": str(path / ".git"), "GIT_WORK_TREE": str(path)}


def run_mlos_bench(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    """The real `mlos_bench` command (schema validation off: it knows only its own service
    classes); its output. It must exit 0."""
    done = subprocess.run(
        [sys.executable, "-m", "mlos_bench.run", *args],
        env={**os.environ, "MLOS_BENCH_SKIP_SCHEMA_VALIDATION": "true", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    return output
