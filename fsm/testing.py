"""Property-based tests for lifecycle definitions, on the real engine and a real database.

`lifecycle_state_machine` turns a lifecycle into a Hypothesis rule-based state machine: it creates
entities, fires every trigger of the definition (allowed or not) with random payloads, moves a
manual clock past deadlines, fires time-limit events, applies mixed batches and writes with stale
versions, and after every step compares the database with a model of what must have happened::

    from fsm import load_definition
    from fsm.testing import lifecycle_state_machine

    Machine = lifecycle_state_machine(load_definition("deploy.yaml"), guards={"quota_ok": ok})
    TestDeploy = Machine.TestCase

The model's next state always comes from the `transitions` library itself
(`Lifecycle.reference_next_state`), so a run also checks the engine's compiled dispatch table
against the library. `check_definition` lists the problems of a definition without raising.
"""

from __future__ import annotations

from fsm.testing_deadlines import Look, LookRecorder, deadline_violations
from fsm.testkit.factory import lifecycle_state_machine
from fsm.testkit.machine import LifecycleStateMachine
from fsm.testkit.model import (
    CANARY,
    SECRET_KEYS,
    EntityInvariant,
    InvariantViolation,
    PlannedEvent,
)
from fsm.testkit.static import check_definition

__all__ = [
    "CANARY",
    "SECRET_KEYS",
    "EntityInvariant",
    "InvariantViolation",
    "LifecycleStateMachine",
    "Look",
    "LookRecorder",
    "PlannedEvent",
    "check_definition",
    "deadline_violations",
    "lifecycle_state_machine",
]
