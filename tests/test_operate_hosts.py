"""Hosts that run themselves under a real `fsm run` process, over the fake ARM (real SDK, real
HTTPS): a host command's operation that fails moves its host in the commit that records the
failure (fsm.cascade), with nothing but the worker loop running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from backends.hostctl import HostControl
from fsm import Engine
from tests.azure_support import SUBSCRIPTION, TOKEN, make_rig
from tests.fake_arm import FakeArm

pytest_plugins = ["tests.azure_fixtures"]  # the fake ARM's fixtures


def _until(check: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log.exists() else ""
            pytest.fail(f"{what} not reached in {timeout}s\n{tail}")
        time.sleep(0.05)


def _config(arm: FakeArm, folder: Path) -> Path:
    backend = {
        "kind": "azure",
        "subscription_id": SUBSCRIPTION,
        "base_url": arm.base_url,
        "ca_bundle": str(arm.tls.ca),
        "credential": "static_token",
        "token_env": "FSM_TEST_AZURE_TOKEN",
        "retry_total": 1,
        "retry_backoff_factor": 0.01,
    }
    config = folder / "run.yaml"
    run = {"interval": 0.1, "lease_seconds": 2, "refresh_scale": 0.05, "backends": [backend]}
    config.write_text(yaml.safe_dump(run))
    return config


def _fsm_run(db: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FSM_TEST_AZURE_TOKEN": TOKEN}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fsm", "run", "--db", db, "--config", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_failed_operation_moves_its_host_under_fsm_run(arm: FakeArm, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/hosts.db"
    rig = make_rig(arm, db)
    host = rig.host("vm1")
    assert rig.wait(rig.submit(host.id, "provision")).name == "SUCCEEDED"
    assert rig.wait(rig.submit(host.id, "stop")).name == "SUCCEEDED"
    # ARM accepts the start and its operation ends Canceled: the VM stays stopped, so only the
    # operation can tell the host its command failed (a Failed one also marks the VM failed,
    # which the listing may report first)
    arm.world.outcomes["start"] = "Canceled"
    arm.world.durations["start"] = 1.0
    # submitted without driving anything: only the `fsm run` process below moves it on
    quiet = HostControl(rig.engine, rig.worker, rig.backend, drive=False)
    ticket = quiet.submit(host.id, "start", operation_data={"azure": host.data["azure"]})
    assert rig.state(host.id) == "STARTING" and ticket.operation_id is not None
    rig.backend.close()
    rig.engine.close()

    log = tmp_path / "run.log"
    loop = _fsm_run(db, _config(arm, tmp_path), log)
    reader = Engine(db, migrate=False)
    try:

        def failed_by_operation() -> bool:
            return any(t.event == "operation_failed" for t in reader.history(host.id))

        _until(failed_by_operation, 60, "the host's operation_failed", log)
        op = reader.get(ticket.operation_id)
        assert (op.state, op.parent_id) == ("CANCELED", host.id)
        failed_op = reader.history(op.id)[-1]
        failed_host = next(t for t in reader.history(host.id) if t.event == "operation_failed")
        assert (failed_host.from_state, failed_host.to_state) == ("STARTING", "FAILED")
        assert failed_host.payload["operation"] == op.id
        assert failed_host.recorded_at == failed_op.recorded_at  # the same commit
        assert failed_host.source == failed_op.source == "azure"
        assert failed_host.payload["child_state"] == "CANCELED"
        # the listing then shows where the VM really is: stopped, as before the start
        _until(lambda: reader.get(host.id).state == "STOPPED", 60, "host STOPPED again", log)
        assert reader.verify() == []
    finally:
        loop.terminate()
        loop.wait(30)
        reader.close()
    assert loop.returncode == 0


def test_a_scheduled_host_start_creates_its_operation_in_its_commit(
    arm: FakeArm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fsm command HOST start --in 0` (scheduled, from the shell); a real `fsm run` carries it
    out: the operation entity comes into being with the host's `start` transition, is sent, and
    its success or the listing confirms the host RUNNING. Then a scheduled start whose
    operation ends Canceled leaves the host FAILED in the operation's commit."""
    db = f"sqlite:///{tmp_path}/scheduled.db"
    rig = make_rig(arm, db)
    host = rig.host("vm2")
    assert rig.wait(rig.submit(host.id, "provision")).name == "SUCCEEDED"
    assert rig.wait(rig.submit(host.id, "stop")).name == "SUCCEEDED"
    rig.backend.close()
    rig.engine.close()
    config = _config(arm, tmp_path)
    monkeypatch.setenv("FSM_TEST_AZURE_TOKEN", TOKEN)
    from fsm.cli import main

    def schedule(command: str) -> None:
        args = ["command", host.id, command, "--in", "0", "--config", str(config), "--db", db]
        assert main(args) == 0

    schedule("start")
    starts_before = arm.world.count("POST", r"/vm2/start$")
    log = tmp_path / "run.log"
    loop = _fsm_run(db, config, log)
    reader = Engine(db, migrate=False)
    try:
        _until(lambda: reader.get(host.id).state == "RUNNING", 60, "host RUNNING", log)
        start = next(t for t in reader.history(host.id) if t.event == "start")
        assert start.source == "schedule"
        op_id = start.payload["operation"]
        _until(lambda: reader.get(op_id).state == "SUCCEEDED", 60, "operation SUCCEEDED", log)
        op = reader.get(op_id)
        assert (op.parent_id, op.data["command"], op.state) == (host.id, "start", "SUCCEEDED")
        assert abs((op.created_at - start.recorded_at).total_seconds()) < 1.0  # one commit
        assert [t.event for t in reader.history(op.id)] == ["start", "succeed"]
        assert arm.world.count("POST", r"/vm2/start$") == starts_before + 1  # sent once

        # stop it again, then a scheduled start whose operation ends Canceled
        arm.world.outcomes["start"] = "Canceled"
        schedule("stop")
        _until(lambda: reader.get(host.id).state == "STOPPED", 60, "host STOPPED", log)
        schedule("start")

        def failed_by_operation() -> bool:
            return any(t.event == "operation_failed" for t in reader.history(host.id))

        _until(failed_by_operation, 60, "operation_failed on the host", log)
        failed = next(t for t in reader.history(host.id) if t.event == "operation_failed")
        canceled = reader.get(failed.payload["operation"])
        assert canceled.state == "CANCELED" and canceled.parent_id == host.id
        assert reader.history(canceled.id)[-1].recorded_at == failed.recorded_at
        assert reader.verify() == []
    finally:
        loop.terminate()
        loop.wait(30)
        reader.close()
    assert loop.returncode == 0
