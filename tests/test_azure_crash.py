"""SIGKILL `fsm run` while an Azure operation is in flight: after a restart the loop resumes
polling the same ARM operation (same continuation token, same Azure-AsyncOperation URL) and
never sends a second create."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from fsm import Engine
from tests.azure_support import SUBSCRIPTION, TOKEN, make_rig
from tests.fake_arm import FakeArm

pytest_plugins = ["tests.azure_fixtures"]  # the fake ARM's fixtures


def _until(check: Callable[[], bool], timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(p.read_text()[-3000:] for p in logs if p.exists())
            pytest.fail(f"{what} not reached in {timeout}s\n{tails}")
        time.sleep(0.05)


def _loop(db: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FSM_TEST_AZURE_TOKEN": TOKEN}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fsm", "run", "--db", db, "--config", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
def test_sigkill_mid_operation_resumes_the_same_operation(arm: FakeArm, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/crash.db"
    arm.world.durations["create"] = 6.0  # slow enough to kill the loop in the middle
    rig = make_rig(arm, db)
    host = rig.host("crash-vm")
    ticket = rig.submit(host.id, "provision")
    assert ticket.operation_id is not None
    op_id = ticket.operation_id
    submitted = rig.engine.get(op_id).data
    rig.backend.close()
    rig.engine.close()
    [arm_op] = arm.world.operations.values()

    config = tmp_path / "run.yaml"
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
    run = {"interval": 0.1, "lease_seconds": 1, "refresh_scale": 0.05, "backends": [backend]}
    config.write_text(yaml.safe_dump(run))
    logs = [tmp_path / "first.log", tmp_path / "second.log"]

    first = _loop(db, config, logs[0])
    try:
        _until(lambda: arm_op.polls >= 2, 20, "the first loop polling the operation", logs)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert not arm_op.done, "the operation must still be in flight when the loop dies"
    polls_at_kill = arm_op.polls

    reader = Engine(db, migrate=False)
    try:
        assert reader.get(op_id).state == "RUNNING"
        second = _loop(db, config, logs[1])
        try:
            _until(
                lambda: (
                    reader.get(host.id).state == "RUNNING"
                    and reader.get(op_id).state == "SUCCEEDED"
                ),
                40,
                "host RUNNING and operation SUCCEEDED after the restart",
                logs,
            )
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(20)
        op = reader.get(op_id)
        # the same operation: same token, same async-operation URL, polled after the restart
        assert op.data["continuation_token"] == submitted["continuation_token"]
        assert op.data["azure_async_operation"] == submitted["azure_async_operation"]
        assert arm_op.id in op.data["azure_async_operation"] and arm_op.polls > polls_at_kill
        # ... and no other: one create was sent, one ARM operation exists, only it was polled
        assert arm.world.count("PUT", r"/virtualMachines/crash-vm$") == 1
        assert list(arm.world.operations) == [arm_op.id]
        polled = {r.path.rsplit("/", 1)[1] for r in arm.world.requests if "/operations/" in r.path}
        assert polled == {arm_op.id}
        assert [t.event for t in reader.history(op_id)] == ["start", "succeed"]
        # confirmed by the listing, or by the operation's success in its commit (fsm.cascade)
        events = [t.event for t in reader.history(host.id)]
        assert events in (["provision", "running"], ["provision", "operation_succeeded"])
        assert reader.verify() == []
    finally:
        reader.close()
