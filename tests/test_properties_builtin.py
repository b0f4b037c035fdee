"""The property-test kit (`fsm.testing`) run on the built-in lifecycles, on SQLite and PostgreSQL.

Each built-in lifecycle gets its own SQLite machine with the profile's examples ("ci": 200
examples of up to 30 steps). PostgreSQL costs several round trips per step, so one machine drives
all three lifecycles at once (batches mixing them) with a tenth of the examples. A lifecycle of
our own shows guards, `unless`, callbacks and a user invariant. The last tests break the engine on
purpose and check that the kit notices: a kit that cannot fail would prove nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
import yaml
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

import fsm.engine
from fsm import (
    BUILTIN_NAMES,
    Definition,
    Engine,
    Entity,
    Event,
    EventContext,
    Guard,
    InvalidEvent,
    Lifecycle,
    builtin_definition,
)
from fsm.lifecycle import CompiledTransition
from fsm.testing import LifecycleStateMachine, lifecycle_state_machine


def _known_state(engine: Engine, entity: Entity) -> None:
    """A user invariant, as users would write one: the state belongs to the lifecycle."""
    assert entity.state in engine.lifecycle(entity.lifecycle).definition.state_names


ServiceMachine = lifecycle_state_machine(builtin_definition("service"), invariants=[_known_state])
HostMachine = lifecycle_state_machine(builtin_definition("host"))
OperationMachine = lifecycle_state_machine(builtin_definition("operation"))

TestServiceLifecycle = ServiceMachine.TestCase
TestHostLifecycle = HostMachine.TestCase
TestOperationLifecycle = OperationMachine.TestCase


# -- a lifecycle of one's own, with guards, an `unless`, a callback and an invariant ------------

DEPLOY = """
name: deploy
states:
  - {name: QUEUED, initial: true}
  - {name: RUNNING, time_limit: 30, on_time_limit: expire}
  - {name: VERIFYING}
  - {name: DONE, terminal: true}
  - {name: FAILED, terminal: true}
transitions:
  - {trigger: start, source: QUEUED, dest: RUNNING, guards: has_job}
  - {trigger: start, source: QUEUED, dest: "="}
  - {trigger: finish, source: RUNNING, dest: VERIFYING, after: audit}
  - {trigger: verify, source: VERIFYING, dest: DONE, unless: bad_exit}
  - {trigger: verify, source: VERIFYING, dest: FAILED}
  - {trigger: retry, source: VERIFYING, dest: QUEUED}
  - {trigger: expire, source: RUNNING, dest: FAILED}
  - {trigger: abort, source: "*", dest: FAILED}
"""
DEPLOY_GUARDS: dict[str, Guard] = {
    "has_job": lambda ctx: "job_id" in ctx.data,
    "bad_exit": lambda ctx: ctx.payload.get("exit_code") not in (None, 0),
}


def _audit(ctx: EventContext, dest: str) -> None:
    """A callback: runs in the engine after a transition is chosen, before it commits."""
    assert ctx.event == "finish" and dest == "VERIFYING"


def _needs_a_job(engine: Engine, entity: Entity) -> None:
    """A domain rule of our own: only a deployment with a job gets past QUEUED (or fails)."""
    assert entity.state in ("QUEUED", "FAILED") or "job_id" in entity.data


def _deploy_machine(**options: Any) -> type[LifecycleStateMachine]:
    definition = Definition.from_dict(yaml.safe_load(DEPLOY), known_guards=DEPLOY_GUARDS)
    settings_: dict[str, Any] = {
        "guards": DEPLOY_GUARDS,
        "callbacks": {"audit": _audit},
        "invariants": [_needs_a_job],
        "entity_data": st.sampled_from([{}, {"job_id": 1}, {"job_id": 2, "owner": "ops"}]),
    }
    return lifecycle_state_machine(definition, **{**settings_, **options})


DeployMachine = _deploy_machine(verify_every_step=True)
TestDeployLifecycle = DeployMachine.TestCase
TestDeployLifecycle.settings = settings(max_examples=max(10, settings().max_examples // 4))


@pytest.fixture(autouse=True, scope="module")
def _close_machines() -> Iterator[None]:
    yield
    for machine in (ServiceMachine, HostMachine, OperationMachine, DeployMachine):
        machine.close()


def _run(machine: type[LifecycleStateMachine], **overrides: Any) -> None:
    try:
        run_state_machine_as_test(machine, settings=settings(**overrides))
    finally:
        machine.close()


@pytest.mark.postgres
def test_builtin_lifecycles_on_postgres(pg_url: str) -> None:
    machine = lifecycle_state_machine(
        [builtin_definition(name) for name in BUILTIN_NAMES], db_url=pg_url, entities=4
    )
    _run(machine, max_examples=max(10, settings().max_examples // 10))


@pytest.mark.postgres
def test_kit_refuses_a_database_that_is_not_empty(pg_url: str) -> None:
    """The kit empties its database between examples, so it must never be given real data."""
    engine = Engine(pg_url)
    engine.create("service", id="precious")
    machine = lifecycle_state_machine(builtin_definition("service"), db_url=pg_url)
    with pytest.raises(ValueError, match="empty scratch database"):
        _run(machine, max_examples=1)
    assert engine.get("precious").state == "SUBMITTED"
    engine.close()


# -- the kit must catch a broken engine ---------------------------------------------------------


def _kit_fails(machine: type[LifecycleStateMachine] | str) -> str:
    """Run the kit (no shrinking), expecting it to fail; return its message."""
    if isinstance(machine, str):
        machine = lifecycle_state_machine(builtin_definition(machine))
    with pytest.raises(AssertionError) as caught:
        _run(machine, max_examples=200, phases=[Phase.generate], report_multiple_bugs=False)
    return str(caught.value)


def test_kit_catches_a_dispatch_table_that_skips_guards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the first candidate without checking its guards: `start` without a job moves on,
    where the transitions machine keeps the deployment QUEUED."""

    def unguarded(
        found: tuple[CompiledTransition, ...], context: Callable[[], EventContext]
    ) -> CompiledTransition | None:
        return found[0]

    # the engine's one lookup per event: `pairs`, then `choose_from` on what it found
    monkeypatch.setattr(Lifecycle, "choose_from", staticmethod(unguarded))
    assert "the transitions machine" in _kit_fails(_deploy_machine())


def test_kit_catches_a_user_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own invariants run too: let `has_job` always hold, and a deployment without
    a job starts (engine and reference agree, so only the user's invariant can tell)."""
    monkeypatch.setitem(DEPLOY_GUARDS, "has_job", lambda ctx: True)
    assert "_needs_a_job" in _kit_fails(_deploy_machine())


def _picky(ctx: EventContext) -> bool:
    if ctx.data.get("owner") == "ops":
        raise PermissionError("ops may not start deployments")
    return "job_id" in ctx.data


def _audit_down(ctx: EventContext, dest: str) -> None:
    if ctx.data.get("job_id") == 1:
        raise ConnectionError("audit log unreachable")


def test_kit_handles_guards_and_callbacks_that_raise() -> None:
    """A guard that raises is part of the rules (the reference machine raises too): the kit
    expects CallbackError and nothing written. A callback that raises fails the run, unless
    the machine is told callbacks may raise."""
    hooks: dict[str, Any] = {
        "guards": {**DEPLOY_GUARDS, "has_job": _picky},
        "callbacks": {"audit": _audit_down},
    }
    _run(_deploy_machine(**hooks, callbacks_may_raise=True), max_examples=25)
    assert "callback raised" in _kit_fails(_deploy_machine(**hooks))


def test_kit_catches_unredacted_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsm.engine, "redact", lambda value: dict(value))
    assert "CANARY-SECRET-" in _kit_fails("operation")


def test_kit_catches_a_deadline_one_second_late(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Engine._deadline

    def late(
        self: Engine, lifecycle: Lifecycle, state: str, entered: datetime, data: Mapping[str, Any]
    ) -> datetime | None:
        return original(self, lifecycle, state, entered + timedelta(seconds=1), data)

    monkeypatch.setattr(Engine, "_deadline", late)
    assert "deadline_at" in _kit_fails("host")


def test_kit_catches_a_refused_event_that_bumps_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An event refused as invalid must not write; make the engine bump the head anyway."""
    original = Engine._step

    def leaky(self: Engine, head: Any, event: Event, now: datetime) -> Any:
        try:
            return original(self, head, event, now)
        except InvalidEvent:
            head.version += 1
            raise

    monkeypatch.setattr(Engine, "_step", leaky)
    assert "version" in _kit_fails("operation")
