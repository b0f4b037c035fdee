"""A full `mlos_bench` trial of an unchanged shipped root config over the fake ARM:
`cli/azure-redis-bench.jsonc` → `environments/root/root-azure-redis.jsonc` (provision-ubuntu-vm,
boot-ubuntu, setup-ubuntu, redis), run the way its header says
(`--globals experiment_RedisBench.jsonc --tunable_values ...`), from the installed package.

What the user provides is what upstream asks a user to provide: a working directory (first on
mlos_bench's config search path) with their `global_config_azure.jsonc` and, because our class
replaces upstream's VM service, an overlay copy of `service-linux-vm-ops.jsonc` with only its
class changed; mlos_bench's own AzureAuthService and AzureFileShareService run unchanged. Git:
mlos_bench records the git commit of the root environment config, which a config installed from
a wheel does not have; the user's run directory is a git repository (GIT_DIR/GIT_WORK_TREE name
it, since the config itself lives in site-packages).

The CLI config says `"teardown": false`, so the VM is still running afterwards (with the Redis
server its setup started): the test then deletes it through our service from another process
and directory, finding it in the default per-user database — nothing is left behind.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from backends.mlos import AzureVMService
from fsm import Engine
from tests.azure_bench import (
    STORAGE_KEY,
    VM_OPS,
    client_environment,
    experiment_globals,
    prepare_cloud,
    user_globals,
    write_overlay,
)
from tests.azure_support import database_text, require_fake_vms
from tests.fake_arm import FakeArm
from tests.mlos_support import CONFIG_DIR, confirmed, run_mlos_bench, scratch_repo

pytest_plugins = ["tests.azure_fixtures"]  # the fake ARM's fixtures

pytestmark = pytest.mark.slow
#: values that differ from the tunables' defaults (as upstream's tunable-values-example.jsonc)
TUNABLE_VALUES = {
    "sched_migration_cost_ns": 400000,
    "sched_latency_ns": 10000000,
    "sched_child_runs_first": "0",
    "sched_tunable_scaling": "1",
}


def _mlos_bench(work: Path, env: dict[str, str]) -> str:
    args = ["--config", str(CONFIG_DIR / "cli/azure-redis-bench.jsonc")]
    args += ["--globals", "experiments/experiment_RedisBench.jsonc"]
    args += ["--tunable_values", "tunable-values.jsonc"]
    return run_mlos_bench(args, cwd=work, env=env, timeout=300)


def test_azure_redis_bench_trial_over_the_fake_arm(
    arm: FakeArm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_fake_vms()
    work = tmp_path / "bench"
    work.mkdir()
    write_overlay(work, {VM_OPS: AzureVMService})
    # the default database: the per-user data directory (XDG_DATA_HOME here), not a config key
    (work / "global_config_azure.jsonc").write_text(json.dumps(user_globals(arm, None)))
    (work / "tunable-values.jsonc").write_text(json.dumps(TUNABLE_VALUES))
    data_home = tmp_path / "xdg"
    expected = experiment_globals(arm, None)
    prepare_cloud(arm, expected)
    env = {**client_environment(arm), **scratch_repo(work), "XDG_DATA_HOME": str(data_home)}
    monkeypatch.delenv("FSM_DB", raising=False)
    output = _mlos_bench(work, env)

    # the trial succeeded with the score redis-benchmark measured on the VM
    share = arm.world.files.share(expected["storageAccountName"], expected["storageFileShareName"])
    csv = (share / "RedisBench/1/output/results.csv").read_text().splitlines()
    assert csv[0].startswith('"test","rps"') and csv[1].startswith('"SET"'), csv
    measured = float(csv[1].split(",")[-1].strip('"'))
    with sqlite3.connect(work / "mlos_bench.sqlite") as db:
        statuses = db.execute("SELECT status FROM trial WHERE exp_id = 'RedisBench'").fetchall()
        score = db.execute(
            "SELECT metric_value FROM trial_result WHERE exp_id = 'RedisBench' AND "
            "metric_id = 'score'"
        ).fetchall()
    assert statuses == [("SUCCEEDED",)]
    assert [float(s) for (s,) in score] == [measured] and measured > 0
    assert re.search(r"Final score: \{'score': [0-9.]+\}", output), output[-3000:]
    # the storage key: mlos_bench's own DEBUG log prints it (in its config dumps); ours never do
    ours = {"base.py", "hostops.py", "remote.py", "azure.py", "hostctl.py", "backend.py"}
    ours |= {"operations.py", "polling.py", "worker.py", "engine.py", "settings.py"}
    logged = (work / "azure-redis-bench.log").read_text().splitlines()
    leaks = [
        line
        for line in logged
        if STORAGE_KEY in line and line.split(" ")[2:3] and line.split(" ")[2].split(":")[0] in ours
    ]
    assert leaks == []

    # the tunable values reached the VM's kernel; the VM runs on ("teardown": false)
    machine = arm.world.machine(expected["resourceGroup"], expected["vmName"])
    assert machine.sysctl("kernel.sched_migration_cost_ns") == "400000"
    assert machine.sysctl("kernel.sched_latency_ns") == "10000000"
    assert "redis-server" in machine.run("docker ps", {}, timeout=30)[0]
    assert arm.world.unauthorized == 0
    assert set(arm.world.token_requests) == {
        "https://management.azure.com",
        "https://storage.azure.com",
    }

    # from another directory and process: the default database finds the VM, deleting it
    # leaves nothing behind (its OS, and the Redis server in it, end with it)
    db = data_home / "fsm" / "mlos.db"
    assert db.exists() and (db.stat().st_mode & 0o777) == 0o600
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    monkeypatch.delenv("FSM_DB", raising=False)
    for name, value in client_environment(arm).items():
        monkeypatch.setenv(name, value)
    config = {
        key: expected[key]
        for key in ("subscription", "resourceGroup", "location", "baseUrl", "caBundle")
    }
    service = AzureVMService(
        config,  # credentials: DefaultAzureCredential (the managed identity endpoint)
        {"pollInterval": 0.05, "refreshScale": 0.02},
    )
    try:
        host = service.hosts.current_host(service._host_key({"vmName": expected["vmName"]}))
        assert host is not None and host.state == "RUNNING"
        status, result = service.deprovision_host({"vmName": expected["vmName"]})
        assert status.is_pending()
        assert service.wait_host_deployment(result, is_setup=False)[0].is_succeeded()
    finally:
        service.close()
    assert arm.world.vms == {} and arm.world.machines == {}
    engine = Engine(f"sqlite:///{db}", migrate=False)
    try:
        events = [confirmed(t.event, t.to_state) for t in engine.history(f"{host.id}")]
        assert events[:2] == ["provision", "running"] and events[-2:] == ["deprovision", "deleted"]
        assert "adopted_running" not in events  # found in the database, not adopted
        assert engine.verify() == []
        assert STORAGE_KEY not in database_text(engine)
    finally:
        engine.close()
