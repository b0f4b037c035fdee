"""Upstream mlos_bench's test scenarios for its AzureVMService
(mlos_bench/tests/services/remote/azure/azure_vm_services_test.py), run against our
AzureVMService over the fake ARM: the real SDK, real HTTPS, answers as the REST examples give.

Upstream mocks `requests`; here the fake ARM answers each scenario's status code. Where we
deliberately differ, the test says so and checks our outcome instead:
- a wait whose polls fail (dropped connections, 5xx) keeps waiting (a failed observation, not a
  failed operation): it ends SUCCEEDED when the operation does, TIMED_OUT if it never answers;
- the run command's script is the lines joined by newlines (upstream joins with "; ", which
  breaks multi-line constructs), runs synchronously (`asyncExecution: false`, the operation
  ends with the script) and its parameters are strings (the REST API's type);
- deprovision deletes the VM (upstream deallocates: its issue 498).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from mlos_bench.environments.status import Status

from backends.mlos import AzureVMService
from tests.azure_support import RG, TOKEN, require_fake_vms
from tests.fake_arm import FakeArm
from tests.fake_arm.resources import Vm
from tests.mlos_support import azure_service, confirmed

pytest_plugins = ["tests.azure_fixtures"]  # the fake ARM's fixtures

#: each operation, the VM's power state it starts from, and the request it sends
OPERATIONS = [
    ("start_host", "stopped", "POST", r"/vm1/start$"),
    ("stop_host", "running", "POST", r"/vm1/powerOff$"),
    ("shutdown", "running", "POST", r"/vm1/powerOff$"),
    ("deprovision_host", "running", "DELETE", r"/virtualMachines/vm1$"),
    ("deallocate_host", "running", "POST", r"/vm1/deallocate$"),
    ("restart_host", "running", "POST", r"/vm1/restart$"),
    ("reboot", "running", "POST", r"/vm1/restart$"),
]


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSM_TEST_AZURE_TOKEN", TOKEN)


@pytest.fixture
def service(arm: FakeArm, tmp_path: Path, token: None) -> Iterator[AzureVMService]:
    """Upstream's `azure_vm_service_remote_exec_only`: no template, pollTimeout 2."""
    made = azure_service(arm, tmp_path, pollTimeout=2, vmSpec=None)
    yield made
    made.close()


def existing_vm(arm: FakeArm, power: str, name: str = "vm1", *, booted: bool = False) -> Vm:
    """A VM that exists in Azure but not in our database (made elsewhere); `booted`: its OS is
    already up (as a running VM's is), so a script's wait does not include its boot."""
    vm = Vm(RG, name, "westus", {"hardwareProfile": {"vmSize": "Standard_B2s"}})
    vm.settle("Succeeded", power)
    arm.world.vms[(RG.lower(), name)] = vm
    if booted:
        require_fake_vms()
        arm.world.machine(RG, name).boot()
    return vm


@pytest.mark.parametrize(("operation", "power", "method", "path"), OPERATIONS)
@pytest.mark.parametrize(
    ("http_status", "expected"),
    [(200, Status.SUCCEEDED), (202, Status.PENDING), (401, Status.FAILED), (404, Status.FAILED)],
)
def test_vm_operation_status(
    service: AzureVMService,
    arm: FakeArm,
    operation: str,
    power: str,
    method: str,
    path: str,
    http_status: int,
    expected: Status,
) -> None:
    existing_vm(arm, power)
    world = arm.world
    if http_status == 200:  # the REST examples' synchronous answer
        world.sync_actions = {"start", "powerOff", "restart", "deallocate"}
        world.delete_status = 200
    elif http_status in (401, 404):
        world.inject(http_status, method=method, path=path)
    call = getattr(service, operation)
    with pytest.raises(ValueError, match="vmName"):
        call({})  # upstream: a missing vmName raises
    status, result = call({"vmName": "vm1"})
    assert status == expected
    assert world.count(method, path) == 1  # the request was sent, once, whoever made the VM
    assert world.count("GET", r"/virtualMachines/vm1$") == 1  # one look to adopt it
    host = service.hosts.current_host(service._host_key({"vmName": "vm1"}))
    assert host is not None
    first = service.engine.history(host.id)[0]
    assert first.event == f"adopted_{power}" and first.source == "azure"
    assert first.payload["named_by"] == "params" and first.payload["power"] == power
    if expected is Status.PENDING:
        assert result["asyncResultsUrl"] and result["pollInterval"] == 1.0  # Retry-After
        assert service.wait_host_operation(result)[0] is Status.SUCCEEDED
    if expected is Status.SUCCEEDED:
        assert result["vmName"] == "vm1"  # upstream: the params, copied


def test_operation_on_a_vm_that_does_not_exist(service: AzureVMService, arm: FakeArm) -> None:
    """Upstream POSTs and gets 404 (FAILED); we look once, see 404, and send nothing else."""
    for operation, _, _, _ in OPERATIONS:
        assert getattr(service, operation)({"vmName": "ghost"}) == (Status.FAILED, {})
    assert arm.world.count("POST", r"/ghost/") == arm.world.count("DELETE", r"/ghost$") == 0
    assert service.hosts.current_host(service._host_key({"vmName": "ghost"})) is None


def test_vm_operation_invalid(service: AzureVMService) -> None:
    """No deployment template (and no vmSpec): provision_host raises like upstream."""
    with pytest.raises(ValueError, match="Missing deployment template"):
        service.provision_host({"vmName": "test-vm"})


def test_wait_vm_operation_ready(service: AzureVMService, arm: FakeArm) -> None:
    existing_vm(arm, "running")
    status, result = service.stop_host({"vmName": "vm1"})
    assert status is Status.PENDING
    result["pollInterval"] = 0.05  # upstream: the wait polls at the params' pollInterval
    status, _ = service.wait_host_operation(result)
    assert status.is_succeeded()
    assert arm.world.vms[(RG.lower(), "vm1")].power == "stopped"


def test_wait_vm_operation_timeout(service: AzureVMService, arm: FakeArm) -> None:
    existing_vm(arm, "running")
    arm.world.durations["restart"] = 3600.0  # InProgress for ever
    status, result = service.restart_host({"vmName": "vm1"})
    assert status is Status.PENDING
    assert service.wait_host_operation(result) == (Status.TIMED_OUT, {})


@pytest.mark.parametrize("total_retries", [2, 1, 0])
def test_wait_vm_operation_retry(
    arm: FakeArm, tmp_path: Path, token: None, total_retries: int
) -> None:
    """Dropped connections while polling. Upstream: enough retries SUCCEEDED, else FAILED.
    Ours (deliberately): a poll that could not be answered is a failed observation, so the
    wait goes on and ends SUCCEEDED whatever the retry budget; only a poll that never
    answers ends it, as TIMED_OUT (the operation may still finish: FAILED would be a lie)."""
    service = azure_service(
        arm, tmp_path, pollTimeout=10, requestTotalRetries=total_retries, vmSpec=None
    )
    try:
        existing_vm(arm, "running")
        arm.world.durations["powerOff"] = 0.4
        status, result = service.stop_host({"vmName": "vm1"})
        assert status is Status.PENDING
        arm.world.inject(0, method="GET", path=r"/operations/", times=2)  # connection dropped
        assert service.wait_host_operation({**result, "pollInterval": 0.05})[0] is Status.SUCCEEDED
        assert arm.world.faults[0].times == 0  # both drops were met
    finally:
        service.close()


def test_wait_host_deployment_retry_and_outage(arm: FakeArm, tmp_path: Path, token: None) -> None:
    """A permanent 503 while waiting: TIMED_OUT (upstream: FAILED), the host unchanged."""
    service = azure_service(arm, tmp_path, pollTimeout=1.0, requestTotalRetries=0, vmSpec=None)
    try:
        existing_vm(arm, "running")
        status, result = service.deallocate_host({"vmName": "vm1"})
        assert status is Status.PENDING
        arm.world.inject(503, method="GET", times=10_000)
        assert service.wait_host_operation(result) == (Status.TIMED_OUT, {})
        host = service.hosts.current_host(service._host_key({"vmName": "vm1"}))
        assert host is not None and host.state == "DEALLOCATING"
    finally:
        service.close()


@pytest.mark.parametrize(
    ("http_status", "expected"),
    [
        (200, Status.PENDING),
        (201, Status.PENDING),
        (202, Status.PENDING),  # the REST example's Accepted, refused by the SDK's own call
        (401, Status.FAILED),
        (404, Status.FAILED),
    ],
)
def test_remote_exec_status(
    service: AzureVMService, arm: FakeArm, http_status: int, expected: Status
) -> None:
    existing_vm(arm, "running", booted=True)
    if http_status in (401, 404):
        arm.world.inject(http_status, method="PUT", path=r"/runCommands/")
    else:
        arm.world.run_command_status = http_status
    config = {"vmName": "vm1", "commandName": "TEST_COMMAND", "location": "westus"}
    status, result = service.remote_exec(["echo one", "echo two"], config=config, env_params={})
    assert status == expected
    if expected is Status.PENDING:
        status, output = service.get_remote_exec_results(result)
        assert status is Status.SUCCEEDED and output["stdout"] == ["one", "two"]


def test_remote_exec_output(service: AzureVMService, arm: FakeArm) -> None:
    existing_vm(arm, "running")
    script = ["command_1", "command_2"]
    config = {"vmName": "vm1", "commandName": "TEST_COMMAND", "location": "TEST_LOCATION"}
    _, output = service.remote_exec(script, config, {"param_1": 123, "param_2": "abc"})
    assert "asyncResultsUrl" in output
    assert arm.world.run_command_bodies[-1] == {
        "location": "TEST_LOCATION",
        "properties": {
            "source": {"script": "\n".join(script)},  # upstream: "; ".join(script)
            "protectedParameters": [
                {"name": "param_1", "value": "123"},  # the REST API's type: strings
                {"name": "param_2", "value": "abc"},
            ],
            "timeoutInSeconds": 2,  # follows pollTimeout, as upstream
            "asyncExecution": False,  # upstream: True (and polls the instance view)
            "treatFailureAsDeploymentFailure": False,
        },
    }


@pytest.mark.parametrize(
    ("operation_status", "wait_output", "results_output"),
    [
        (
            Status.SUCCEEDED,
            {
                "properties": {
                    "instanceView": {
                        "output": "DUMMY_STDOUT\n",
                        "error": "DUMMY_STDERR\n",
                        "executionState": "Succeeded",
                        "exitCode": 0,
                        "startTime": "2024-01-01T00:00:00+00:00",
                        "endTime": "2024-01-01T00:01:00+00:00",
                    }
                }
            },
            {
                "stdout": ["DUMMY_STDOUT"],
                "stderr": ["DUMMY_STDERR"],
                "exitCode": 0,
                "startTimestamp": datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC),
                "endTimestamp": datetime(2024, 1, 1, 0, 1, 0, tzinfo=UTC),
            },
        ),
        (Status.PENDING, {}, {}),
        (Status.FAILED, {}, {}),
    ],
)
def test_get_remote_exec_results(
    service: AzureVMService,
    operation_status: Status,
    wait_output: dict[str, Any],
    results_output: dict[str, Any],
) -> None:
    """Exactly upstream's test: get_remote_exec_results goes through the (here mocked)
    wait_remote_exec_operation and reshapes its instance view."""
    params = {"asyncResultsUrl": "DUMMY_ASYNC_URL"}
    mock_wait = MagicMock(return_value=(operation_status, wait_output))
    setattr(service, "wait_remote_exec_operation", mock_wait)  # noqa: B010 - as upstream
    status, output = service.get_remote_exec_results(params)
    assert status == operation_status
    assert mock_wait.call_args[0][0] == params
    assert output == results_output


def test_remote_exec_results_end_to_end(service: AzureVMService, arm: FakeArm) -> None:
    """The real path: a failing script keeps its output (upstream's wait drops it)."""
    existing_vm(arm, "running", booted=True)
    config = {"vmName": "vm1", "commandName": "run"}
    script = ['echo "to $WHO" | tr a-z A-Z', "echo oops >&2", "exit 3"]
    status, result = service.remote_exec(script, config, {"WHO": "you; rm -rf /"})
    assert status is Status.PENDING
    status, output = service.get_remote_exec_results(result)
    assert status is Status.FAILED
    assert output["stdout"] == ["TO YOU; RM -RF /"] and output["stderr"] == ["oops"]
    assert output["exitCode"] == 3
    assert output["startTimestamp"] <= output["endTimestamp"]
    assert output["startTimestamp"].tzinfo is not None


def test_run_command_on_a_deallocated_vm_is_refused(service: AzureVMService, arm: FakeArm) -> None:
    existing_vm(arm, "deallocated")
    status, _ = service.remote_exec(["echo hi"], {"vmName": "vm1", "commandName": "x"}, {})
    assert status is Status.FAILED
    assert arm.world.count("PUT", r"/runCommands/") == 1 and not arm.world.run_command_bodies


def test_restart_is_not_confirmed_by_a_stale_listing(service: AzureVMService, arm: FakeArm) -> None:
    """Right after a restart ARM still lists succeeded+running: that is not the restart's
    confirmation; the host stays RESTARTING until the operation itself has succeeded."""
    existing_vm(arm, "running")
    arm.world.stale_window = 0.6
    arm.world.durations["restart"] = 1.0
    status, result = service.restart_host({"vmName": "vm1"})
    assert status is Status.PENDING
    host = service.hosts.current_host(service._host_key({"vmName": "vm1"}))
    assert host is not None
    op_id = result["asyncResultsUrl"].rsplit("operation=", 1)[1]
    for _ in range(5):  # listings inside the stale window
        service.hosts.tick()
        assert service.engine.get(host.id).state == "RESTARTING"
    assert service.wait_host_operation(result)[0] is Status.SUCCEEDED
    assert service.engine.get(op_id).state == "SUCCEEDED"
    events = [confirmed(t.event, t.to_state) for t in service.engine.history(host.id)]
    assert events == ["adopted_running", "restart", "running"]  # by the operation or the listing
