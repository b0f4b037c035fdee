"""The fake VMs behind the fake ARM's Run Commands: real enough for mlos_bench's scripts, and
unable to touch this machine (its kernel settings, mounts, services, files and processes).

Scripts go through our AzureVMService and the real SDK, as RemoteEnv sends them."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlos_bench.environments.status import Status

from backends.mlos import AzureVMService
from tests.azure_support import RG, TOKEN, require_fake_vms
from tests.fake_arm import FakeArm
from tests.fake_arm.resources import Vm
from tests.mlos_support import azure_service

pytest_plugins = ["tests.azure_fixtures"]  # the fake ARM's fixtures


@pytest.fixture
def service(
    arm: FakeArm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AzureVMService]:
    require_fake_vms()
    monkeypatch.setenv("FSM_TEST_AZURE_TOKEN", TOKEN)
    vm = Vm(RG, "vm1", "westus", {"hardwareProfile": {"vmSize": "Standard_B2s"}})
    vm.settle("Succeeded", "running")
    arm.world.vms[(RG.lower(), "vm1")] = vm
    made = azure_service(arm, tmp_path, outputLines=False)
    yield made
    made.close()


def run(service: AzureVMService, *script: str, **env: str) -> tuple[Status, dict[str, object]]:
    status, result = service.remote_exec(list(script), {"vmName": "vm1", "commandName": "t"}, env)
    assert status is Status.PENDING, result
    return service.get_remote_exec_results(result)


def _host_sees(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout


def test_the_vm_has_its_own_kernel_settings_hostname_processes_and_files(
    service: AzureVMService, arm: FakeArm
) -> None:
    swappiness = Path("/proc/sys/vm/swappiness").read_text()
    hugepages = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
    huge_before = hugepages.read_text() if hugepages.exists() else None
    status, out = run(
        service,
        "hostname",
        "sudo sysctl -w vm.swappiness=3 kernel.sched_latency_ns=8000000",
        "echo 64 | sudo tee /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
        "echo 1 > /proc/sys/kernel/no_such_setting || echo refused-new-sysctl",
        "touch /sys/fake 2>/dev/null || echo refused-sys",
        "ps -e -o pid=,comm= | head -1",
        "echo fake > /etc/fake-vm-was-here && touch /usr/bin/fake-vm-was-here",
        "mkdir -p /etc/sysctl.d && echo 'vm.swappiness = 9' > /etc/sysctl.d/99-fake.conf",
    )
    assert status is Status.SUCCEEDED, out
    stdout = str(out["stdout"]).splitlines()
    assert stdout[0] == "vm1"
    assert "vm.swappiness = 3" in stdout and "64" in stdout
    assert "refused-new-sysctl" in stdout and "refused-sys" in stdout
    assert stdout[-1].split() == ["1", "python3"]  # its own PID namespace: its init is PID 1
    machine = arm.world.machine(RG, "vm1")
    assert machine.sysctl("vm.swappiness") == "3"
    assert machine.sysctl("kernel.sched_latency_ns") == "8000000"
    # nothing of that reached this machine
    assert Path("/proc/sys/vm/swappiness").read_text() == swappiness
    assert huge_before is None or hugepages.read_text() == huge_before
    assert not Path("/etc/fake-vm-was-here").exists()
    assert not Path("/usr/bin/fake-vm-was-here").exists()
    assert not Path("/etc/sysctl.d/99-fake.conf").exists()
    assert (machine.disk / "upper/etc/fake-vm-was-here").exists()  # on the VM's own disk
    # a restart (Azure's, through the API): its settings come back from its own sysctl.d
    status, result = service.restart_host({"vmName": "vm1"})
    assert service.wait_host_operation(result)[0] is Status.SUCCEEDED
    status, out = run(service, "cat /proc/sys/vm/swappiness /proc/sys/kernel/sched_latency_ns")
    assert str(out["stdout"]).split() == ["9", "12000000"]


def test_its_network_is_its_own_and_this_machines_redis_is_untouched(
    service: AzureVMService,
) -> None:
    here_before = _host_sees(["redis-cli", "-p", "6379", "info", "server"])
    status, out = run(
        service,
        "redis-cli -p 6379 ping 2>&1 || echo no-redis-here",
        "docker run -d --rm --name redis-server -p 6379:6379 redis:7.0 >/dev/null",
        "for i in $(seq 50); do redis-cli -h $(hostname -f) -p 6379 ping 2>/dev/null && break;"
        " sleep 0.1; done",
        "redis-cli -p 6379 info server | grep run_id",
    )
    assert status is Status.SUCCEEDED, out
    lines = str(out["stdout"]).splitlines()
    assert "no-redis-here" in lines and "PONG" in lines
    vm_run_id = next(line for line in lines if line.startswith("run_id"))
    if "run_id" in here_before:  # this machine runs a Redis of its own on 6379: still its own
        assert vm_run_id.strip() not in here_before
        assert _host_sees(["redis-cli", "-p", "6379", "info", "server"]).count("run_id") == 1


def test_docker_behaves_as_the_docker_cli(service: AzureVMService, arm: FakeArm) -> None:
    status, out = run(
        service,
        "docker pull redis:7.0 | tail -1",
        "docker run -d --name keep redis:7.0 --port 7000 > /dev/null; echo run=$?",
        "docker run -d --name keep redis:7.0 2>/dev/null; echo again=$?",
        "docker rm keep 2>/dev/null; echo rm-running=$?",
        "docker pull nosuch/image 2>/dev/null; echo pull-unknown=$?",
        "docker stop keep && docker ps -a | grep -c exited",
        "docker rm keep && docker rm keep 2>/dev/null; echo rm-missing=$?",
    )
    assert status is Status.SUCCEEDED, out
    assert str(out["stdout"]).splitlines() == [
        "docker.io/library/redis:7.0",
        "run=0",
        "again=125",
        "rm-running=1",
        "pull-unknown=1",
        "keep",
        "1",
        "keep",
        "rm-missing=1",
    ]


def test_a_reboot_from_inside_is_azures_restart(service: AzureVMService, arm: FakeArm) -> None:
    """boot-ubuntu's commented-out lines, done: boot parameters into /etc/default/grub.d,
    update-grub, `shutdown -r now`. The OS goes down (the script with it), Azure's power
    state moves (starting, then running), and the next boot has the new command line."""
    arm.world.durations["restart"] = 1.0
    machine = arm.world.machine(RG, "vm1")
    status, out = run(
        service,
        "echo 'GRUB_CMDLINE_LINUX_DEFAULT=\"${GRUB_CMDLINE_LINUX_DEFAULT} idle=poll\"' |"
        " sudo tee /etc/default/grub.d/99-mlos.cfg > /dev/null",
        "sudo update-grub",
        "echo rebooting; sudo shutdown -r now; sleep 30; echo never",
    )
    assert status is Status.FAILED  # the agent's script died with the OS, as on Azure
    assert str(out["stdout"]).splitlines() == ["rebooting"]
    assert "Generating grub configuration file" in str(out["stderr"])
    powers: list[str | None] = []
    deadline = time.monotonic() + 10
    while not ("starting" in powers and powers[-1] == "running"):
        assert time.monotonic() < deadline, f"the power state never moved: {powers}"
        arm.world.advance()
        power = arm.world.vms[(RG.lower(), "vm1")].power
        if not powers or powers[-1] != power:
            powers.append(power)
        time.sleep(0.01)
    boots = machine.boots
    status, out = run(service, "cat /proc/cmdline; tail -1 /var/log/fake-vm/power.log")
    assert status is Status.SUCCEEDED
    cmdline, power_log = str(out["stdout"]).splitlines()
    assert cmdline.endswith("idle=poll") and "reboot" in power_log
    assert machine.boots == boots + 1


def test_a_shutdown_from_inside_stops_the_vm(service: AzureVMService, arm: FakeArm) -> None:
    status, _ = run(service, "sudo poweroff; sleep 30")
    assert status is Status.FAILED
    host = service.hosts.current_host(service._host_key({"vmName": "vm1"}))
    assert host is not None
    deadline = time.monotonic() + 15
    while service.engine.get(host.id).state != "STOPPED":
        assert time.monotonic() < deadline, "the guest's shutdown was never observed"
        service.hosts.tick()
        time.sleep(0.05)
    assert [t.event for t in service.engine.history(host.id)] == ["adopted_running", "stopped"]
    assert not arm.world.machine(RG, "vm1").up


def test_azure_files_mounts_check_the_account_and_its_key(
    service: AzureVMService, arm: FakeArm
) -> None:
    arm.world.files.create_share("acct", "share", "the-key")
    mount = "sudo mount -t cifs //{}.file.core.windows.net/{} /mnt/s -o username={},password={}"
    status, out = run(
        service,
        "sudo mkdir -p /mnt/s",
        mount.format("acct", "share", "acct", "wrong") + " 2> err; echo $?; head -1 err",
        mount.format("nope", "share", "nope", "x") + " 2> err; echo $?; head -1 err",
        mount.format("acct", "other", "acct", "$KEY") + " 2> err; echo $?; head -1 err",
        mount.format("acct", "share", "acct", "$KEY") + " && echo hello > /mnt/s/from-vm",
        "sudo apt-get -y install no-such-package > /dev/null 2>&1; echo apt=$?",
        KEY="the-key",
    )
    assert status is Status.SUCCEEDED, out
    assert str(out["stdout"]).splitlines() == [
        "32",
        "mount error(13): Permission denied",
        "32",
        "mount error: could not resolve address for nope.file.core.windows.net: Unknown error",
        "32",
        "mount error(2): No such file or directory",
        "apt=100",
    ]
    assert (arm.world.files.share("acct", "share") / "from-vm").read_text() == "hello\n"
    assert " /mnt/s " not in Path("/proc/self/mountinfo").read_text()  # this machine's mounts


def test_no_vm_process_outlives_the_fake_arm(service: AzureVMService, arm: FakeArm) -> None:
    status, _ = run(service, "docker run -d --rm --name r redis:7.0 >/dev/null")
    assert status is Status.SUCCEEDED
    machine = arm.world.machine(RG, "vm1")
    init = machine._init_pid
    assert init is not None and _alive(init)
    arm.world.shutdown()
    deadline = time.monotonic() + 5
    while _alive(init):
        assert time.monotonic() < deadline, "the VM's init survived"
        time.sleep(0.01)
    assert not machine.home.exists()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
