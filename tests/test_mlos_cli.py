"""The real `mlos_bench` command loads our service by class name from a user's JSON config and
runs one trial (setup, run, teardown) of a CompositeEnv; the engine recorded every step.

mlos_bench validates service config files against its own schema, which only knows its own
classes: a user sets MLOS_BENCH_SKIP_SCHEMA_VALIDATION=true (as here). Its storage records the
git commit of the environment config, so the configs live in a scratch git repository.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fsm import Engine
from tests.azure_support import TOKEN, require_fake_vms
from tests.fake_arm import FakeArm
from tests.mlos_support import (
    APP,
    HOST,
    OS,
    REMOTE,
    azure_service,
    confirmed,
    run_mlos_bench,
    scratch_repo,
)

pytest_plugins = ["tests.azure_fixtures"]  # the fake ARM's fixtures

pytestmark = pytest.mark.slow


def _run_mlos_bench(tmp_path: Path, service: dict[str, Any], extra_env: dict[str, str]) -> str:
    scratch_repo(tmp_path)
    # one tunable: mlos_bench's command line refuses a run whose best config is empty
    tunables = {
        "app": {"cost": 1, "params": {"threads": {"type": "int", "default": 4, "range": [1, 8]}}}
    }
    environment = {
        "name": "bench",
        "class": "mlos_bench.environments.CompositeEnv",
        "include_tunables": [str(tmp_path / "tunables.jsonc")],
        "config": {
            "const_args": {"vmName": "cli-vm"},
            "children": [
                {"name": "host", "class": HOST, "config": {"required_args": ["vmName"]}},
                {"name": "os", "class": OS, "config": {"required_args": ["vmName"]}},
                {
                    "name": "app",
                    "class": REMOTE,
                    "config": {
                        "required_args": ["vmName"],
                        "tunable_params": ["app"],
                        "shell_env_params": ["threads"],
                        **APP,
                    },
                },
            ],
        },
    }
    (tmp_path / "tunables.jsonc").write_text(json.dumps(tunables, indent=2))
    (tmp_path / "service.jsonc").write_text(json.dumps(service, indent=2))
    (tmp_path / "env.jsonc").write_text(json.dumps(environment, indent=2))
    args = ["--service", str(tmp_path / "service.jsonc")]
    args += ["--environment", str(tmp_path / "env.jsonc"), "--log_level", "INFO"]
    return run_mlos_bench(args, cwd=tmp_path, env=extra_env, timeout=120)


def _check_history(db: str, key: str, first: list[str]) -> list[str]:
    engine = Engine(db, migrate=False)
    try:
        host = engine.get(f"{key}#1")
        assert host.state == "DEPROVISIONED"
        assert [confirmed(t.event, t.to_state) for t in engine.history(host.id)] == [
            *first, "shutdown", "stopped", "deprovision", "deleted",
        ]  # fmt: skip
        ops = engine.list_entities(lifecycle="operation", parent_id=host.id)
        assert ops and {o.state for o in ops} == {"SUCCEEDED"}
        assert engine.verify() == []
        return sorted(str(o.data["stdout"]) for o in ops if "stdout" in o.data)
    finally:
        engine.close()


def test_mlos_bench_runs_a_trial_on_this_machine(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/fsm.db"
    service = {
        "class": "backends.mlos.LocalHostService",
        "config": {"db": db, "pollInterval": 0.05, "pollTimeout": 60},
    }
    output = _run_mlos_bench(tmp_path, service, {})
    assert "'score': 42" in output or "score': 42" in output, output[-2000:]
    # this machine exists: it is adopted (running), never "provisioned"
    stdouts = _check_history(db, "local:localhost", ["adopted_running"])
    assert stdouts == ["score=42\n", "setting up\n", "tearing down\n"]


def test_mlos_bench_runs_a_trial_on_the_fake_arm(tmp_path: Path, arm: FakeArm) -> None:
    require_fake_vms()
    db = f"sqlite:///{tmp_path}/fsm.db"
    # strings: mlos_bench's RemoteEnv cannot match results_stdout_pattern in a list
    config = azure_service(
        arm, tmp_path, db=db, pollInterval=0.05, refreshScale=0.05, outputLines=False
    ).config
    output = _run_mlos_bench(
        tmp_path,
        {"class": "backends.mlos.AzureVMService", "config": config},
        {"FSM_TEST_AZURE_TOKEN": TOKEN},
    )
    assert "score': 42" in output, output[-2000:]
    stdouts = _check_history(db, "azure:fsm-test-rg/cli-vm", ["provision", "running"])
    assert stdouts == ["score=42\n", "setting up\n", "tearing down\n"]
    assert arm.world.vms == {} and arm.world.unauthorized == 0
