"""A child that finishes moves its parent, in the transaction that records it finishing.

A definition may name, per terminal state, the event its entity's parent gets
(`parent_events: {FAILED: operation_failed, SUCCEEDED: operation_succeeded}`, as the built-in
operation does for its host). When a staged batch moves an entity with a `parent_id` into such
a state, the parent is read and locked in the same unit of work and gets that event, with
`{"child": ID, "child_lifecycle": ..., "child_state": ...}` (and the child's `operation` id
under `operation`) as payload: both commit together, or neither. The parent's own rules decide
what the event does — an event its state does not allow is skipped (the parent moved on), a
guard that holds it back keeps it where it is — and nothing of that is an error of the child's.
The parent's transition may in turn finish it and move its own parent (at most `MAX_DEPTH`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fsm.events import Event

if TYPE_CHECKING:
    from fsm.staging import Head, StagedBatch
    from storage import TransitionRow

log = logging.getLogger(__name__)

MAX_DEPTH = 8
_TRIGGER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")


def parent_events(
    raw: Any, states: Mapping[str, Any], problem: Callable[[str], None]
) -> tuple[tuple[str, str], ...]:
    """The `parent_events` of a definition, checked: terminal states to event names."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        problem("parent_events must map terminal states to the event their parent gets")
        return ()
    found = []
    for state, event in raw.items():
        spec = states.get(state) if isinstance(state, str) else None
        if spec is None:
            problem(f"parent_events: unknown state {str(state)[:80]!r}")
        elif not spec.terminal:
            problem(f"parent_events: {state} is not terminal (only a finished child moves it)")
        elif not (isinstance(event, str) and _TRIGGER.match(event)):
            problem(f"parent_events.{state} must be an event name")
        else:
            found.append((state, event))
    return tuple(sorted(found))


def after_transition(batch: StagedBatch, head: Head, transition: TransitionRow, depth: int) -> None:
    """Give the parent of an entity that just finished its event (see the module docstring)."""
    if depth >= MAX_DEPTH or head.row.parent_id is None:
        return
    lifecycle = batch.engine.lifecycles.get(head.row.lifecycle)
    event_name = None if lifecycle is None else lifecycle.parent_events.get(transition.to_state)
    if event_name is None:
        return
    parent_id = head.row.parent_id
    parent = batch.head(parent_id) or batch.lock_more(parent_id)
    if parent is None:
        return
    parent_lifecycle = batch.engine.lifecycles.get(parent.row.lifecycle)
    if parent_lifecycle is None or parent_lifecycle.candidates(parent.state, event_name) is None:
        return  # the parent is elsewhere by now: nothing for it to do
    payload: dict[str, Any] = {
        "child": head.row.id,
        "child_lifecycle": head.row.lifecycle,
        "child_state": transition.to_state,
    }
    if head.row.lifecycle == "operation":
        payload["operation"] = head.row.id
    event = Event(parent_id, event_name, payload, transition.source, transition.observed_at)
    outcome = batch.add_checked(event, event, depth=depth + 1)
    if outcome.error is not None:
        log.warning("%s finished %s, but %s: %s", head.row.id, parent_id, event_name, outcome.error)
