"""mlos_bench's shipped OS and application environments — setup-ubuntu, the Redis composite and
the fio composite — run from the installed package through mlos_bench's own Environment classes
over the fake ARM, with the root config's services (only the VM service's class swapped: see
`tests.azure_bench`). Their scripts run unchanged on the fake VMs (`tests.fake_arm.vm`): real
bash, sudo, mount, sysctl, apt-get, fio and redis, in namespaces that cannot touch this machine.

Over the simulator these environments do not apply: their remote scripts need root on a VM
(mounting a share, kernel settings, docker, fio on /), and the simulator runs scripts on this
machine. Each test leaves no VM behind (and no VM's process: deleting a VM ends its OS).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlos_bench.config.schemas import config_schemas
from mlos_bench.tunables.tunable_groups import TunableGroups

from backends.mlos import AzureVMService
from tests.azure_bench import (
    VM_OPS,
    client_environment,
    composite,
    experiment_globals,
    load_root_services,
    prepare_cloud,
    write_overlay,
)
from tests.azure_support import database_text, require_fake_vms
from tests.fake_arm import FakeArm
from tests.fake_arm.resources import Vm

pytest_plugins = ["tests.azure_fixtures"]  # the fake ARM's fixtures

pytestmark = pytest.mark.slow
MOUNT = "/mnt/osat_fs"  # the root config's const_args


@pytest.fixture
def bench(
    arm: FakeArm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """The root config's services over the fake cloud, with the experiment's globals."""
    require_fake_vms()
    for name, value in client_environment(arm).items():
        monkeypatch.setenv(name, value)
    # MLOS_BENCH_SKIP_SCHEMA_VALIDATION=true, as read when mlos_bench is imported: its schema
    # knows only its own service classes
    monkeypatch.setattr(config_schemas, "_SKIP_VALIDATION", True)
    overlay = tmp_path / "overlay"
    write_overlay(overlay, {VM_OPS: AzureVMService})
    config = experiment_globals(
        arm, f"sqlite:///{tmp_path}/fsm.db", experiment_id="RedisBench", mountPoint=MOUNT
    )
    prepare_cloud(arm, config)
    loader, bundle, ours = load_root_services(overlay, config)
    yield {"loader": loader, "service": bundle, "ours": ours, "config": config, "dir": tmp_path}
    ours.close()
    assert arm.world.vms == {} and arm.world.machines == {}, "a VM was left behind"


def _existing_vm(arm: FakeArm, config: dict[str, Any]) -> None:
    """A running VM made elsewhere (setup-ubuntu runs on a VM that is already there)."""
    vm = Vm(config["resourceGroup"], config["vmName"], config["location"], {})
    vm.settle("Succeeded", "running")
    arm.world.vms[(config["resourceGroup"].lower(), config["vmName"].lower())] = vm


def _load(bench: dict[str, Any], path: str | Path) -> Any:
    return bench["loader"].load_environment(
        str(path), TunableGroups(), global_config=bench["config"], service=bench["service"]
    )


def _on_a_new_vm(bench: dict[str, Any], app: str) -> Any:
    """provision-ubuntu-vm + boot-ubuntu (which mounts the share) + `app`, composed as the
    root config composes them."""
    children = [
        "environments/vm/azure/provision-ubuntu-vm.jsonc",
        "environments/os/linux/boot/boot-ubuntu.jsonc",
        app,
    ]
    return _load(bench, composite(bench["dir"], "bench", children, mountPoint=MOUNT))


def _delete(bench: dict[str, Any]) -> None:
    ours: AzureVMService = bench["ours"]
    status, result = ours.deprovision_host({"vmName": bench["config"]["vmName"]})
    assert status.is_pending()
    assert ours.wait_host_deployment(result, is_setup=False)[0].is_succeeded()


def test_boot_ubuntu_against_an_existing_vm(bench: dict[str, Any], arm: FakeArm) -> None:
    """boot-ubuntu.jsonc on a VM made elsewhere: OSEnv adopts it (one GET); the local env
    generates grub.cfg and uploads it with mlos_bench's AzureFileShareService; on the VM, the
    remote env's `sudo mount -t cifs` (real mount(8); the cifs helper checks the account key)
    mounts the share and reads the file back; teardown shuts the VM down (its OS with it)."""
    config = bench["config"]
    _existing_vm(arm, config)
    env = _load(bench, "environments/os/linux/boot/boot-ubuntu.jsonc")
    machine = arm.world.machine(config["resourceGroup"], config["vmName"])
    with env as ctx:
        assert ctx.setup(env.tunable_params)
        status, _, _ = ctx.run()
        assert status.is_ready()  # no run script: READY, as mlos_bench reports it
        assert "on /mnt/osat_fs type" in machine.run("mount", {}, timeout=10)[0]
        ctx.teardown()
    vm = arm.world.vms[(config["resourceGroup"].lower(), config["vmName"].lower())]
    assert vm.power == "stopped" and not machine.up  # OSEnv's teardown: the OS went down
    outputs = [rc.output for rc in arm.world.run_commands.values()]
    assert any(
        'GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} idle=halt"' in out
        for out in outputs
    )
    bodies = [b["properties"] for b in arm.world.run_command_bodies]
    assert all(config["storageAccountKey"] not in b["source"]["script"] for b in bodies)
    assert any(p["name"] == "storageAccountKey" for b in bodies for p in b["protectedParameters"])
    host = bench["ours"].hosts.current_host(bench["ours"]._host_key(config))
    assert host is not None
    assert [t.event for t in bench["ours"].engine.history(host.id)][:1] == ["adopted_running"]
    assert config["storageAccountKey"] not in database_text(bench["ours"].engine)
    _delete(bench)


def test_setup_ubuntu_applies_the_kernel_tunables_on_an_existing_vm(
    bench: dict[str, Any], arm: FakeArm
) -> None:
    """setup-ubuntu.jsonc: the kernel parameters are generated locally, uploaded to Azure Files
    (the real SDK), and applied on the VM by the generated config-kernel.sh, run with sudo from
    the cifs mount; they land in the VM's kernel, never in this machine's."""
    config = bench["config"]
    groups = ["linux-scheduler", "linux-swap", "linux-hugepages-2048kB"]
    config["tunable_params_map"]["linux-runtime"] = groups
    host_swappiness = Path("/proc/sys/vm/swappiness").read_text()
    hugepages = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    host_hugepages = Path(hugepages).read_text() if Path(hugepages).exists() else None
    _existing_vm(arm, config)
    env = _load(bench, "environments/os/linux/runtime/setup-ubuntu.jsonc")
    tunables = env.tunable_params
    tunables.assign({"sched_migration_cost_ns": 400000, "sched_latency_ns": 10000000})
    # sizes scaled down through the tunables (a real kernel would reserve 32 MiB here)
    tunables.assign({"swappiness": 7, "nr_hugepages": 16})
    machine = arm.world.machine(config["resourceGroup"], config["vmName"])
    with env as ctx:
        assert ctx.setup(tunables)
        assert machine.sysctl("kernel.sched_migration_cost_ns") == "400000"
        assert machine.sysctl("kernel.sched_latency_ns") == "10000000"
        assert machine.sysctl("vm.swappiness") == "7"
        assert machine.read(hugepages) == "16\n"
        status, _, _ = ctx.run()
        assert status.is_ready()  # no run script: READY, as mlos_bench reports it
        ctx.teardown()
    assert host_hugepages is None or Path(hugepages).read_text() == host_hugepages
    assert Path("/proc/sys/vm/swappiness").read_text() == host_swappiness
    assert not Path("/proc/sys/kernel/sched_migration_cost_ns").exists()  # this machine's kernel
    share = arm.world.files.share(config["storageAccountName"], config["storageFileShareName"])
    script = (share / "RedisBench/1/input/config-kernel.sh").read_text()
    assert 'echo "400000" > /proc/sys/kernel/sched_migration_cost_ns' in script
    host = bench["ours"].hosts.current_host(bench["ours"]._host_key(config))
    assert host is not None and [t.event for t in bench["ours"].engine.history(host.id)][:1] == [
        "adopted_running"
    ]
    assert config["storageAccountKey"] not in database_text(bench["ours"].engine)
    _delete(bench)


def test_redis_composite_benchmarks_a_real_redis(bench: dict[str, Any], arm: FakeArm) -> None:
    """provision-ubuntu-vm + boot-ubuntu + redis.jsonc, composed as the root config composes
    them: the shipped redis scripts run docker (Debian's redis-server and redis-benchmark, in
    the VM's own network namespace), the results go through the share, mlos_bench's own
    post-processing reads them; teardown stops the server and deletes the VM."""
    env = _on_a_new_vm(bench, "environments/apps/redis/redis.jsonc")
    config = bench["config"]
    with env as ctx:
        assert ctx.setup(env.tunable_params)
        machine = arm.world.machine(config["resourceGroup"], config["vmName"])
        status, _, results = ctx.run()
        assert status.is_succeeded(), results
        assert results is not None
        share = arm.world.files.share(config["storageAccountName"], config["storageFileShareName"])
        csv = (share / "RedisBench/1/output/results.csv").read_text().splitlines()
        assert csv[0].startswith('"test","rps"') and csv[1].startswith('"SET"')
        measured = [float(v.strip('"')) for v in csv[1].split(",")[1:]]
        assert results["score"] == measured[-1] and results["SET_rps"] == measured[0] > 0
        assert "redis-server" in (machine.read("/var/lib/docker/fake/redis-server.json") or "")
        ctx.teardown()
    assert not machine.up and arm.world.vms == {}
    assert config["storageAccountKey"] not in database_text(bench["ours"].engine)


def test_fio_composite_runs_a_real_fio(bench: dict[str, Any], arm: FakeArm) -> None:
    """provision-ubuntu-vm + boot-ubuntu + fio.jsonc: apt-get (offline, fio already installed),
    then the shipped job file with real fio (libaio, direct I/O) on /fio_test.tmp — the VM's
    disk, never this machine's / — and mlos_bench's own post-processing of the JSON output."""
    assert not Path("/fio_test.tmp").exists()
    env = _on_a_new_vm(bench, "environments/apps/fio/fio.jsonc")
    config = bench["config"]
    with env as ctx:
        assert ctx.setup(env.tunable_params)
        status, _, results = ctx.run()
        assert status.is_succeeded(), results
        assert results is not None
        assert results["fio.jobname"] == "test-job" and results["fio.error"] == 0
        assert results["fio.read.io_bytes"] > 0 and results["fio.write.io_bytes"] > 0
        assert results["fio.disk_util.name"]  # a real block device under the VM's disk
        share = arm.world.files.share(config["storageAccountName"], config["storageFileShareName"])
        raw = json.loads((share / "RedisBench/1/output/fio/fio_results.json").read_text())
        assert raw["jobs"][0]["read"]["io_bytes"] == results["fio.read.io_bytes"]
        machine = arm.world.machine(config["resourceGroup"], config["vmName"])
        assert not (machine.root / "fio_test.tmp").exists()  # the run's own `sudo rm`
        ctx.teardown()
    assert not Path("/fio_test.tmp").exists()
