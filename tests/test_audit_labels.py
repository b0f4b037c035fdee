"""Audit of issue 8, items 5 and 11: ids, event names and sources are labels that `fsm watch`,
`history` and `status` print on an operator's terminal. A control character in one (an ANSI
escape, an OSC title sequence, a carriage return that hides the line) is refused, typed, and
nothing of the batch's other events is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsm import Engine, Event, InvalidInput

LABELS = ["\x1b[31mred", "\x1b]0;title\x07", "ok\rFORGED", "a\nb", "tab\there", "\x7f", "\x9b2J"]


@pytest.mark.parametrize("label", LABELS)
def test_control_characters_in_a_source_are_refused_and_the_batch_survives(
    tmp_path: Path, label: str
) -> None:
    engine = Engine(f"sqlite:///{tmp_path}/fsm.db")
    try:
        good, bad = engine.create("service").id, engine.create("service").id
        result = engine.apply([Event(good, "job_pending"), Event(bad, "job_pending", source=label)])
        assert result.outcomes[0].error is None
        assert isinstance(result.outcomes[1].error, InvalidInput)
        assert engine.get(good).state == "PENDING"
        assert engine.get(bad).state == "SUBMITTED"
        assert engine.history(bad) == []
    finally:
        engine.close()


@pytest.mark.parametrize("label", LABELS)
def test_control_characters_in_an_id_are_refused(tmp_path: Path, label: str) -> None:
    engine = Engine(f"sqlite:///{tmp_path}/fsm.db")
    try:
        with pytest.raises(InvalidInput):
            engine.create("service", id=f"svc{label}")
        assert engine.list_entities() == []
    finally:
        engine.close()
