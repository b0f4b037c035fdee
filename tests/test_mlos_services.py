"""mlos_bench's own HostEnv, OSEnv, RemoteEnv and CompositeEnv drive our services; every step
they cause is a transition in the engine."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlos_bench.environments.remote.host_env import HostEnv
from mlos_bench.environments.remote.os_env import OSEnv
from mlos_bench.environments.remote.remote_env import RemoteEnv
from mlos_bench.environments.status import Status
from mlos_bench.services.base_service import Service
from mlos_bench.services.types.host_ops_type import SupportsHostOps
from mlos_bench.services.types.host_provisioner_type import SupportsHostProvisioning
from mlos_bench.services.types.os_ops_type import SupportsOSOps
from mlos_bench.services.types.remote_exec_type import SupportsRemoteExec
from mlos_bench.services.types.vm_provisioner_type import SupportsVMOps
from mlos_bench.tunables.tunable_groups import TunableGroups
from typer.testing import CliRunner

from backends.mlos import AzureVMService, EngineHostService
from backends.sim import SimBackend
from fsm import Engine
from fsm.cli import app
from fsm.worker import Worker
from tests.azure_support import TOKEN, require_fake_vms
from tests.fake_arm import FakeArm
from tests.mlos_support import (
    APP,
    azure_service,
    composite,
    environment,
    events,
    local_service,
    sim_service,
)

pytest_plugins = ["tests.azure_fixtures"]  # the fake ARM's fixtures

PROTOCOLS = (
    SupportsHostProvisioning,
    SupportsHostOps,
    SupportsOSOps,
    SupportsRemoteExec,
    SupportsVMOps,
)
WAITS = (
    "wait_host_operation",
    "wait_os_operation",
    "wait_remote_exec_operation",
    "get_remote_exec_results",
    "wait_vm_operation",
)


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSM_TEST_AZURE_TOKEN", TOKEN)


@pytest.fixture
def services(
    tmp_path: Path,
    arm: FakeArm,
    token: None,
) -> Iterator[list[EngineHostService]]:
    made = [sim_service(tmp_path), local_service(tmp_path), azure_service(arm, tmp_path)]
    yield made
    for service in made:
        service.close()


def test_protocols_and_signatures(services: list[EngineHostService]) -> None:
    for service in services:
        for protocol in PROTOCOLS:
            assert isinstance(service, protocol), (service, protocol)
        # as mlos_bench's loader bundles it: a plain Service with our exported methods
        bundle = Service({}, {})
        bundle.register(service.export())
        assert all(isinstance(bundle, protocol) for protocol in PROTOCOLS)
    signature = inspect.signature(EngineHostService.wait_host_deployment)
    assert signature.parameters["is_setup"].kind is inspect.Parameter.KEYWORD_ONLY
    old = list(inspect.signature(EngineHostService.wait_vm_deployment).parameters)
    assert old == ["self", "is_setup", "params"]
    for name in ("stop_host", "restart_host", "shutdown", "reboot"):
        assert (
            inspect.signature(getattr(EngineHostService, name)).parameters["force"].default is False
        )


def test_waits_without_url_are_pending_and_results_carry_poll_settings(tmp_path: Path) -> None:
    service = sim_service(tmp_path, pollInterval=0.03)
    try:
        for name in WAITS:
            assert getattr(service, name)({}) == (Status.PENDING, {}), name
        assert service.wait_host_deployment({}, is_setup=True) == (Status.PENDING, {})
        assert service.wait_vm_deployment(False, {}) == (Status.PENDING, {})
        status, result = service.provision_host({"vmName": "w1"})
        assert status is Status.PENDING and result["pollInterval"] == 0.03
        assert result["asyncResultsUrl"].startswith("fsm:ticket?") and result["vmName"] == "w1"
        assert service.wait_host_deployment(result, is_setup=True)[0] is Status.SUCCEEDED
        # an operation the lifecycle refuses now is FAILED, nothing is recorded for it
        host = service.hosts.current_host("sim:w1")
        assert host is not None
        before = len(service.engine.history(host.id))
        assert service.deallocate_host({"vmName": "w1"})[0] is Status.PENDING
        assert service.restart_host({"vmName": "w1"}) == (Status.FAILED, {})
        assert len(service.engine.history(host.id)) == before + 1
    finally:
        service.close()


def test_a_wait_that_runs_out_is_timed_out(tmp_path: Path) -> None:
    service = sim_service(tmp_path, pollTimeout=0.3, timeScale=100.0)
    try:
        status, result = service.provision_host({"vmName": "slow"})
        assert status is Status.PENDING
        assert service.wait_host_deployment(result, is_setup=True) == (Status.TIMED_OUT, {})
        # mlos_bench 0.6.2's Status.is_timed_out() tests FAILED; ours is TIMED_OUT itself
        assert Status.TIMED_OUT.is_timed_out() is False
    finally:
        service.close()


def test_old_vm_ops_protocol(tmp_path: Path) -> None:
    service = sim_service(tmp_path)
    params = {"vmName": "old"}
    try:
        status, result = service.vm_provision(params)
        assert status is Status.PENDING
        assert service.wait_vm_deployment(True, result)[0] is Status.SUCCEEDED
        for call in (service.vm_stop, service.vm_start, service.vm_restart):
            status, result = call(params)
            # as upstream's, a result is the input params plus what the wait needs
            assert status is Status.PENDING
            assert set(result) == {"vmName", "asyncResultsUrl", "pollInterval"}
            assert service.wait_vm_operation(result)[0] is Status.SUCCEEDED
        status, result = service.vm_deprovision(params)
        assert service.wait_vm_deployment(False, result)[0] is Status.SUCCEEDED
        host = service.hosts.current_host("sim:old")
        assert host is not None and host.state == "DEPROVISIONED"
        assert [e for e, _, _ in events(service.engine, host.id)] == [
            "provision", "running", "stop", "stopped", "start", "running",
            "restart", "running", "deprovision", "deleted",
        ]  # fmt: skip
    finally:
        service.close()


@pytest.fixture(params=["sim", "azure"])
def either(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EngineHostService]:
    """The simulator's service, then AzureVMService on the fake ARM."""
    if request.param == "sim":
        # strings: mlos_bench's RemoteEnv cannot match results_stdout_pattern in a list
        service: EngineHostService = sim_service(tmp_path, outputLines=False)
    else:
        request.getfixturevalue("token")
        service = azure_service(request.getfixturevalue("arm"), tmp_path, outputLines=False)
    yield service
    service.close()


def _key(service: EngineHostService, vm: str) -> str:
    return service._host_key({"vmName": vm})


def test_host_env_alone(either: EngineHostService) -> None:
    env = environment(HostEnv, either, {"const_args": {"vmName": "h1"}})
    with env as ctx:
        assert ctx.setup(TunableGroups())
        ctx.teardown()
    engine = either.engine
    host = either.hosts.current_host(_key(either, "h1"))
    assert host is not None and host.state == "DEPROVISIONED"
    source = either.hosts.backend.name
    assert events(engine, host.id) == [
        ("provision", "PROVISIONING", "user"),
        ("running", "RUNNING", source),
        ("deprovision", "DEPROVISIONING", "user"),
        ("deleted", "DEPROVISIONED", source),
    ]
    assert engine.verify() == []


def test_os_env_alone(either: EngineHostService) -> None:
    if not either.START_PROVISIONS:  # an Azure VM must exist before the OS can start
        _, result = either.provision_host({"vmName": "o1"})
        assert either.wait_host_deployment(result, is_setup=True)[0] is Status.SUCCEEDED
    env = environment(OSEnv, either, {"const_args": {"vmName": "o1"}})
    with env as ctx:
        assert ctx.setup(TunableGroups())
        ctx.teardown()
    host = either.hosts.current_host(_key(either, "o1"))
    assert host is not None and host.state == "STOPPED"
    assert [e for e, _, _ in events(either.engine, host.id)] == [
        "provision", "running", "shutdown", "stopped",
    ]  # fmt: skip


def test_remote_env_alone(either: EngineHostService) -> None:
    if isinstance(either, AzureVMService):
        require_fake_vms()  # the script runs on the fake VM
    status, result = either.provision_host({"vmName": "r1"})
    assert either.wait_host_deployment(result, is_setup=True)[0] is Status.SUCCEEDED
    env = environment(RemoteEnv, either, {"const_args": {"vmName": "r1"}, "wait_boot": True, **APP})
    with env as ctx:
        assert ctx.setup(TunableGroups())
        status, _, output = ctx.run()
        ctx.teardown()
    assert status is Status.SUCCEEDED
    host = either.hosts.current_host(_key(either, "r1"))
    assert host is not None
    ops = [
        o
        for o in either.engine.list_entities(lifecycle="operation", parent_id=host.id)
        if o.data.get("command") in ("exec", "run_command")
    ]
    assert len(ops) == 3 and {o.state for o in ops} == {"SUCCEEDED"}
    assert output == {"score": 42}  # the fake ARM and the simulator both run the script


def test_remote_env_alone_on_this_machine(tmp_path: Path) -> None:
    service = local_service(tmp_path)
    config = {
        "const_args": {"greeting": "hello from mlos", "token": "not-in-the-db-4242"},
        "shell_env_params": ["greeting", "token"],
        "setup": ["printenv greeting"],
        "run": ["echo score=7"],
        "results_stdout_pattern": r"(\w+)=(\d+)",
    }
    env = environment(RemoteEnv, service, config)
    with env as ctx:
        assert ctx.setup(TunableGroups())
        status, _, output = ctx.run()
        ctx.teardown()
    assert status is Status.SUCCEEDED and output == {"score": 7}
    ops = service.engine.list_entities(lifecycle="operation")
    by_output = {o.data["stdout"]: o for o in ops}
    assert set(by_output) == {"hello from mlos\n", "score=7\n"}
    assert {o.state for o in ops} == {"SUCCEEDED"}
    start = service.engine.history(by_output["hello from mlos\n"].id)[0]
    assert start.payload["secrets"] == "***" and start.payload["environment"] == [
        "greeting",
        "token",
    ]
    assert all("not-in-the-db-4242" not in repr(o.data) for o in ops)
    service.close()


def test_failing_script_is_failed_with_its_output(tmp_path: Path) -> None:
    service = local_service(tmp_path)
    try:
        script = ["echo out", "echo err >&2", "exit 5"]
        status, result = service.remote_exec(script, {}, {})  # ran here, at once
        assert status is Status.FAILED and result["exitCode"] == 5
        status, output = service.get_remote_exec_results(result)
        assert status is Status.FAILED
        started, ended = output.pop("startTimestamp"), output.pop("endTimestamp")
        assert started.tzinfo is not None and started <= ended
        assert output == {"stdout": "out\n", "stderr": "err\n", "exitCode": 5}
    finally:
        service.close()


def test_composite_env_over_the_simulator(tmp_path: Path) -> None:
    service = sim_service(tmp_path, outputLines=False)
    env = composite(service, "c1")
    with env as ctx:
        assert ctx.setup(TunableGroups())
        status, _, _ = ctx.run()
        assert status is Status.SUCCEEDED
        ctx.teardown()
    engine = service.engine
    host = service.hosts.current_host("sim:c1")
    assert host is not None
    assert [e for e, _, _ in events(engine, host.id)] == [
        "provision", "running", "shutdown", "stopped", "deprovision", "deleted",
    ]  # fmt: skip
    ops = engine.list_entities(lifecycle="operation", parent_id=host.id)
    assert sorted(o.data["name"] for o in ops) == [
        "mlos-app-run", "mlos-app-setup", "mlos-app-teardown",
    ]  # fmt: skip
    assert all(events(engine, o.id)[-1][1] == "SUCCEEDED" for o in ops)
    assert engine.verify() == []
    shown = CliRunner().invoke(app, ["history", host.id, "--db", service.settings.db or ""])
    assert shown.exit_code == 0 and "DEPROVISIONED" in shown.output
    service.close()


def test_composite_env_over_the_fake_arm(tmp_path: Path, arm: FakeArm, token: None) -> None:
    require_fake_vms()
    service = azure_service(arm, tmp_path, outputLines=False)
    env = composite(service, "bench-vm")
    with env as ctx:
        assert ctx.setup(TunableGroups())
        status, _, output = ctx.run()
        assert (status, output) == (Status.SUCCEEDED, {"score": 42})
        ctx.teardown()
    engine = service.engine
    host = service.hosts.current_host("azure:fsm-test-rg/bench-vm")
    assert host is not None and host.state == "DEPROVISIONED"
    assert events(engine, host.id) == [
        ("provision", "PROVISIONING", "user"),
        ("running", "RUNNING", "azure"),
        ("shutdown", "STOPPING", "user"),
        ("stopped", "STOPPED", "azure"),
        ("deprovision", "DEPROVISIONING", "user"),
        ("deleted", "DEPROVISIONED", "azure"),
    ]
    ops = engine.list_entities(lifecycle="operation", parent_id=host.id)
    kinds = sorted(str(o.data["command"]) for o in ops)
    assert kinds == [
        "deprovision",
        "provision",
        "run_command",
        "run_command",
        "run_command",
        "shutdown",
    ]
    assert {o.state for o in ops} == {"SUCCEEDED"}
    assert all(o.data["continuation_token"] for o in ops)
    assert arm.world.vms == {} and arm.world.count("DELETE", r"/virtualMachines/bench-vm$") == 1
    names = sorted(b["properties"]["source"]["script"] for b in arm.world.run_command_bodies)
    assert names == ["echo score=42", "echo setting up", "echo tearing down"]
    assert engine.verify() == []
    service.close()


def test_azure_wait_that_runs_out_records_timed_out(
    tmp_path: Path,
    arm: FakeArm,
    token: None,
) -> None:
    service = azure_service(arm, tmp_path, pollTimeout=0.6, refreshScale=0.05)
    try:
        status, result = service.provision_host({"vmName": "t1"})
        assert service.wait_host_deployment(result, is_setup=True)[0] is Status.SUCCEEDED
        arm.world.durations["powerOff"] = 60.0
        status, result = service.stop_host({"vmName": "t1"}, force=True)
        assert status is Status.PENDING
        assert service.wait_host_operation(result) == (Status.TIMED_OUT, {})
        op = service.engine.get(result["asyncResultsUrl"].rsplit("operation=", 1)[1])
        for _ in range(50):
            if op.state == "TIMED_OUT":
                break
            service.hosts.tick()
            op = service.engine.get(op.id)
        assert op.state == "TIMED_OUT"
        assert service.engine.history(op.id)[-1].event == "time_limit"
    finally:
        service.close()


def test_service_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown config keys"):
        sim_service(tmp_path, colour="blue")
    with pytest.raises(ValueError, match="pollInterval"):
        sim_service(tmp_path, pollInterval=-1)


def test_waits_can_leave_the_loop_to_another_worker(tmp_path: Path) -> None:
    """driveLoop=false: the service only submits and reads; `fsm run` (here: a thread) drives."""
    service = sim_service(tmp_path, driveLoop=False)
    engine = Engine(service.settings.db, refresh_scale=0.02)
    worker = Worker(engine, [SimBackend(0, time_scale=0.05, operation_failure_rate=0.0)])
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.02):
            worker.tick()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        status, result = service.provision_host({"vmName": "ext"})
        assert status is Status.PENDING
        assert service.wait_host_deployment(result, is_setup=True)[0] is Status.SUCCEEDED
        status, result = service.remote_exec(["echo hi"], {"vmName": "ext"}, {})
        assert service.get_remote_exec_results(result)[0] is Status.SUCCEEDED
    finally:
        stop.set()
        thread.join()
        engine.close()
        service.close()
