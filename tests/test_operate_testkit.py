"""The property-test kit's counterexamples name the events they fired, not drawn indices."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

import fsm.engine
from fsm.lifecycles import builtin_definition
from fsm.testing import lifecycle_state_machine


def _failure_report(machine: Any) -> str:
    with pytest.raises(AssertionError) as caught:
        try:
            run_state_machine_as_test(
                machine,
                settings=settings(
                    max_examples=200,
                    phases=[Phase.generate, Phase.shrink],
                    report_multiple_bugs=False,
                    database=None,
                ),
            )
        finally:
            machine.close()
    return "\n".join([str(caught.value), *getattr(caught.value, "__notes__", [])])


def test_a_counterexample_prints_event_names_and_replayable_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fsm.engine, "redact", lambda value: dict(value))
    report = _failure_report(lifecycle_state_machine(builtin_definition("operation")))
    assert "CANARY-SECRET-" in report
    steps = [line for line in report.splitlines() if line.startswith("state.")]
    assert steps, report
    assert not any("move=(" in line for line in steps), report
    fired = [line for line in steps if "# " in line and " in " in line.split("# ", 1)[1]]
    assert fired, report
    triggers = set(builtin_definition("operation").triggers)
    assert any(word.strip("'\",") in triggers for line in fired for word in line.split()), report
