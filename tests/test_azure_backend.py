"""The Azure backend through the real azure-mgmt-compute client, against the fake ARM over TLS."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backends.azure import AzureBackend, AzureSettings
from backends.azure.polling import describe_token
from backends.hostctl import Progress
from fsm.config import ConfigError, make_backend
from fsm.observation import FailureKind
from tests.azure_support import (
    RG,
    SUBSCRIPTION,
    TOKEN,
    Rig,
    database_text,
    make_rig,
)
from tests.fake_arm import FakeArm

pytest_plugins = ["tests.azure_fixtures"]  # the fake ARM's fixtures


def provisioned(rig: Rig, vm: str = "vm1") -> str:
    host = rig.host(vm)
    assert rig.wait(rig.submit(host.id, "provision")) is Progress.SUCCEEDED
    return host.id


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db_rig(request: pytest.FixtureRequest, arm: FakeArm, tmp_path: Path) -> Iterator[Rig]:
    url = (
        f"sqlite:///{tmp_path}/azure.db"
        if request.param == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    made = make_rig(arm, url)
    yield made
    made.backend.close()
    made.engine.close()


def test_provision_over_tls_reaches_running(any_db_rig: Rig) -> None:
    rig = any_db_rig
    host = rig.host("vm1")
    ticket = rig.submit(host.id, "provision")
    assert ticket.operation_id is not None
    assert rig.wait(ticket) is Progress.SUCCEEDED
    op = rig.engine.get(ticket.operation_id)
    assert (rig.state(host.id), op.state, op.parent_id) == ("RUNNING", "SUCCEEDED", host.id)
    first, confirmed = rig.engine.history(host.id)
    assert (first.from_state, first.to_state, first.event, first.source) == (
        "NEW",
        "PROVISIONING",
        "provision",
        "user",
    )
    # the listing shows it running, or the operation's success confirms it in the commit
    # that records the success (fsm.cascade): whichever the worker saw first
    assert (confirmed.to_state, confirmed.source) == ("RUNNING", "azure")
    assert confirmed.event in ("running", "operation_succeeded")
    if confirmed.event == "operation_succeeded":
        assert confirmed.recorded_at == rig.engine.history(op.id)[-1].recorded_at
    assert [(t.to_state, t.event) for t in rig.engine.history(op.id)] == [
        ("RUNNING", "start"),
        ("SUCCEEDED", "succeed"),
    ]
    # the SDK really went over HTTPS with the bearer token, and the token is durable
    assert rig.arm.base_url.startswith("https://")
    assert rig.arm.world.unauthorized == 0
    assert rig.arm.world.count("PUT", r"/virtualMachines/vm1$") == 1
    assert (
        describe_token(op.data["continuation_token"])["async_operation"]
        == (op.data["azure_async_operation"])
    )
    assert "/operations/" in op.data["azure_async_operation"]
    assert rig.engine.verify() == []


def test_power_cycle_and_real_delete(any_db_rig: Rig) -> None:
    rig = any_db_rig
    host = provisioned(rig)
    steps = [
        ("stop", {"force": True}, "STOPPED", "POST", r"/powerOff$"),
        ("start", {}, "RUNNING", "POST", r"/start$"),
        ("restart", {}, "RUNNING", "POST", r"/restart$"),
        ("shutdown", {}, "STOPPED", "POST", r"/powerOff$"),
        ("deallocate", {}, "DEALLOCATED", "POST", r"/deallocate$"),
        ("start", {}, "RUNNING", "POST", r"/start$"),
        ("reboot", {}, "RUNNING", "POST", r"/restart$"),
        ("deprovision", {}, "DEPROVISIONED", "DELETE", r"/virtualMachines/vm1$"),
    ]
    for command, arguments, state, method, path in steps:
        before = rig.arm.world.count(method, path)
        assert rig.wait(rig.submit(host, command, **arguments)) is Progress.SUCCEEDED, command
        assert rig.state(host) == state, command
        assert rig.arm.world.count(method, path) == before + 1, command
    # force skips the graceful shutdown; deprovision really deletes (unlike upstream issue 498)
    power_offs = [r.query for r in rig.arm.world.requests if r.path.endswith("/powerOff")]
    assert "skipShutdown=true" in power_offs[0] and "skipShutdown=false" in power_offs[1]
    assert rig.arm.world.vms == {}
    assert rig.engine.get(host).terminal
    events = [t.event for t in rig.engine.history(host)]
    # confirmed by the delete operation's success (in its commit) or by the observation
    assert events[-2] == "deprovision" and events[-1] in ("operation_succeeded", "deleted")
    ops = rig.engine.list_entities(lifecycle="operation", parent_id=host)
    assert len(ops) == 1 + len(steps) and {o.state for o in ops} == {"SUCCEEDED"}
    assert rig.engine.verify() == []


def test_run_command_output_exit_code_and_protected_environment(rig: Rig) -> None:
    host = provisioned(rig)
    secret = "s3cr3t-value-never-stored"
    ticket = rig.hosts.execute(
        host,
        {
            "script": ["echo hello $WHO", "echo warning >&2", "exit 3"],
            "secrets": {"WHO": "world", "API_PASSWORD": secret},
        },
        operation_data={
            "command": "run_command",
            "azure": {"resource_group": RG, "vm_name": "vm1", "run_command": "bench-run"},
        },
        time_limit=60,
    )
    assert rig.wait(ticket) is Progress.FAILED
    op = rig.engine.get(ticket.operation_id or "")
    assert (op.state, op.data["exit_code"]) == ("FAILED", 3)
    assert op.data["stdout"] == "hello world\n" and op.data["stderr"] == "warning\n"
    sent = rig.arm.world.run_command_bodies[-1]["properties"]
    assert {p["name"] for p in sent["protectedParameters"]} == {"WHO", "API_PASSWORD"}
    assert "parameters" not in sent or not sent["parameters"]
    assert sent["source"]["script"] == "echo hello $WHO\necho warning >&2\nexit 3"
    assert secret not in database_text(rig.engine)
    start = rig.engine.history(op.id)[0]
    assert start.payload["secrets"] == "***" and start.payload["environment"] == [
        "API_PASSWORD",
        "WHO",
    ]

    ok = rig.hosts.execute(
        host,
        {"script": ["echo done"], "secrets": {}},
        operation_data={
            "command": "run_command",
            "azure": {"resource_group": RG, "vm_name": "vm1", "run_command": "bench-run"},
        },
        time_limit=60,
    )
    assert rig.wait(ok) is Progress.SUCCEEDED
    assert rig.engine.get(ok.operation_id or "").data["exit_code"] == 0


def test_throttling_and_server_errors_are_failed_observations(rig: Rig) -> None:
    host = provisioned(rig)
    now = datetime.now(UTC)
    listing = r"/providers/Microsoft\.Compute/virtualMachines$"
    # more 429s than the SDK retries: the observation fails, with the server's Retry-After
    rig.arm.world.inject(429, method="GET", path=listing, times=2, headers={"Retry-After": "1"})
    before = rig.arm.world.count("GET", listing)
    [seen] = rig.backend.observe([rig.engine.get(host)], now)
    assert (seen.failure, seen.retry_after, seen.events) == (FailureKind.THROTTLED, 1.0, ())
    assert rig.arm.world.count("GET", listing) == before + 2  # azure-core retried once
    rig.arm.world.inject(500, method="GET", path=listing, times=2)
    [seen] = rig.backend.observe([rig.engine.get(host)], now)
    assert seen.failure is FailureKind.ERROR and "500" in seen.detail

    # through the worker: the host keeps its state, the failure counts and backs off
    rig.arm.world.inject(503, method="GET", path=listing, times=2)
    rig.tick_until(lambda: rig.engine.get(host).observation_failures == 1)
    row = rig.engine.get(host)
    assert (
        row.state == "RUNNING" and [t.to_state for t in rig.engine.history(host)][-1] == "RUNNING"
    )
    rig.tick_until(lambda: rig.engine.get(host).observation_failures == 0)

    # an operation whose status polls are throttled stays where it is
    rig.arm.world.durations["powerOff"] = 0.5
    ticket = rig.submit(host, "stop")
    status = r"/operations/"
    rig.arm.world.inject(429, method="GET", path=status, times=2, headers={"Retry-After": "1"})
    op = rig.engine.get(ticket.operation_id or "")
    [seen] = rig.backend.observe([op], datetime.now(UTC))
    assert (seen.failure, seen.retry_after) == (FailureKind.THROTTLED, 1.0)
    rig.arm.world.inject(500, method="GET", path=status, times=2)
    [seen] = rig.backend.observe([op], datetime.now(UTC))
    assert seen.failure is FailureKind.ERROR
    assert rig.state(op.id) == "RUNNING" and rig.state(host) == "STOPPING"
    assert rig.wait(ticket) is Progress.SUCCEEDED
    assert rig.engine.verify() == []


def test_failed_provisioning_fails_operation_and_host(rig: Rig) -> None:
    rig.arm.world.outcomes["create"] = "Failed"
    host = rig.host("bad-vm")
    ticket = rig.submit(host.id, "provision")
    assert rig.wait(ticket) is Progress.FAILED
    op = rig.engine.get(ticket.operation_id or "")
    assert op.state == "FAILED" and op.data["error"].startswith("OSProvisioningTimedOut")
    rig.tick_until(lambda: rig.state(host.id) == "FAILED")
    # recorded from the failed operation, or from the listing (ProvisioningState/failed)
    last = rig.engine.history(host.id)[-1]
    cascade = {"child": op.id, "child_lifecycle": "operation", "child_state": "FAILED"}
    assert (last.event, last.payload) in (
        ("operation_failed", {**cascade, "operation": op.id}),  # in the operation's commit
        ("failed", {"provisioning": "failed", "power": None}),
    )
    [seen] = rig.backend.observe([rig.engine.get(host.id)], datetime.now(UTC))
    assert seen.payload == {"provisioning": "failed", "power": None} and seen.events == ()


def test_canceled_operation(rig: Rig) -> None:
    host = provisioned(rig)
    rig.arm.world.outcomes["deallocate"] = "Canceled"
    ticket = rig.submit(host, "deallocate")
    assert rig.wait(ticket) is Progress.FAILED
    assert rig.state(ticket.operation_id or "") == "CANCELED"
    # the host does not wait in DEALLOCATING for its time limit: the command failed, and the
    # listing then shows where the VM really is
    rig.tick_until(lambda: rig.state(host) == "RUNNING")
    events = [t.event for t in rig.engine.history(host)][-3:]
    assert events == ["deallocate", "operation_failed", "running"]


def test_vm_deleted_behind_our_back_is_deprovisioned(rig: Rig) -> None:
    host = provisioned(rig)
    rig.arm.world.delete_behind_our_back(RG, "vm1")
    rig.tick_until(lambda: rig.state(host) == "DEPROVISIONED")
    last = rig.engine.history(host)[-1]
    assert (last.event, last.source, last.payload) == ("deleted", "azure", {"listed": False})


def test_unreadable_listing_declares_nothing_deleted(rig: Rig) -> None:
    host = provisioned(rig)
    listing = r"/providers/Microsoft\.Compute/virtualMachines$"
    for body in ({"value": [{"id": 42}]}, {"items": []}, [1, 2], b"<html>oops</html>"):
        rig.arm.world.inject(200, method="GET", path=listing, body=body)
        [seen] = rig.backend.observe([rig.engine.get(host)], datetime.now(UTC))
        assert seen.failure is FailureKind.GARBAGE, body
    assert rig.state(host) == "RUNNING"


def test_refused_request_fails_the_operation_not_the_host(rig: Rig) -> None:
    host = provisioned(rig)
    rig.arm.world.inject(409, method="POST", path=r"/restart$")
    ticket = rig.submit(host, "restart")
    assert rig.hosts.progress(ticket)[0] is Progress.FAILED
    assert rig.state(host) == "RUNNING"  # the host never left RUNNING
    assert "409" in rig.engine.get(ticket.operation_id or "").data["error"]
    # a single 429 on a POST is retried by the backend (azure-core does not retry POSTs)
    rig.arm.world.inject(429, method="POST", path=r"/restart$", headers={"Retry-After": "0"})
    assert rig.wait(rig.submit(host, "restart")) is Progress.SUCCEEDED
    assert rig.arm.world.count("POST", r"/restart$") == 3


def test_one_listing_per_batch_across_pages(rig: Rig) -> None:
    rig.arm.world.page_size = 1
    hosts = [provisioned(rig, f"vm{i}") for i in range(3)]
    calls = rig.backend.list_calls
    observed = rig.backend.observe([rig.engine.get(h) for h in hosts], datetime.now(UTC))
    assert rig.backend.list_calls == calls + 1
    assert sorted(o.payload["power"] for o in observed if o.payload) == ["running"] * 3


def test_credentials_and_secrets_never_reach_the_database(rig: Rig) -> None:
    host = provisioned(rig)
    sent = rig.arm.world.vm_bodies[-1]["properties"]["osProfile"]
    assert sent["adminPassword"] == "Sup3r-secret-admin-pw!"  # the VM got it ...
    text = database_text(rig.engine)  # ... the database did not, nor the bearer token
    assert "Sup3r-secret-admin-pw!" not in text and TOKEN not in text
    for entity in rig.engine.list_entities():
        assert TOKEN not in repr(entity.data)
    start = rig.engine.history(rig.engine.list_entities(lifecycle="operation")[0].id)[0]
    assert start.payload["spec"]["properties"]["osProfile"]["adminPassword"] == "***"
    assert rig.state(host) == "RUNNING"


def test_config_for_fsm_run(arm: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSM_TEST_AZURE_TOKEN", TOKEN)
    backend = make_backend(
        {
            "kind": "azure",
            "subscription_id": SUBSCRIPTION,
            "base_url": arm.base_url,
            "ca_bundle": str(arm.tls.ca),
            "credential": "static_token",
            "token_env": "FSM_TEST_AZURE_TOKEN",
        }
    )
    assert isinstance(backend, AzureBackend) and backend.lifecycles == {"host", "operation"}
    assert backend.observe([], datetime.now(UTC)) == []
    backend.close()
    for bad in (
        {"subscription_id": SUBSCRIPTION, "client_secret": "x"},
        {"subscription_id": SUBSCRIPTION, "base_url": "http://127.0.0.1:1"},
        {"subscription_id": SUBSCRIPTION, "credential": "password"},
        {"subscription_id": SUBSCRIPTION, "colour": "blue"},
    ):
        with pytest.raises(ConfigError):
            make_backend({"kind": "azure", **bad})
    with pytest.raises(ValueError, match="secrets do not belong"):
        AzureSettings.from_config({"subscription_id": SUBSCRIPTION, "client_secret": "x"})


def test_host_command_without_operation_brings_its_operation(rig: Rig) -> None:
    """A host command on its own (as a scheduled one runs) creates its operation with its
    transition (fsm.children); an operation that cannot be sent (no VM spec) is recorded
    FAILED, which fails the host in the same commit, and nothing reaches ARM."""
    host = rig.host("vm9")
    rig.worker.command(host.id, "provision")
    [op] = rig.engine.list_entities(lifecycle="operation", parent_id=host.id)
    assert (op.state, op.data["command"]) == ("FAILED", "provision")
    assert "needs a VM spec" in op.data["error"]
    assert rig.state(host.id) == "FAILED"
    events = [(t.event, t.payload.get("operation")) for t in rig.engine.history(host.id)]
    assert events == [("provision", op.id), ("operation_failed", op.id)]
    assert rig.arm.world.count("PUT", r"/virtualMachines/vm9$") == 0
    assert rig.engine.verify() == []
