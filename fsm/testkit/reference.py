"""The reference copy of a lifecycle: the `transitions` machine the kit asks where an event
must lead, with the user's guards (their errors named) and callbacks replaced by no-ops."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fsm.context import EventContext, Guard
from fsm.definition import SAME_STATE
from fsm.lifecycle import Lifecycle


class GuardRaised(Exception):
    """A guard raised inside the reference machine; remembers which one."""

    def __init__(self, name: str, cause: BaseException) -> None:
        super().__init__(name, cause)
        self.name = name
        self.cause = cause


def _named_guard(name: str, guard: Guard) -> Guard:
    def check(ctx: EventContext) -> bool:
        try:
            return bool(guard(ctx))
        except Exception as exc:
            raise GuardRaised(name, exc) from exc

    return check


def _no_callback(_ctx: EventContext, _dest: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Kit:
    """One lifecycle as the kit uses it: the engine's copy and the reference copy."""

    lifecycle: Lifecycle
    reference: Lifecycle
    legal_moves: frozenset[tuple[str, str, str]]  # (trigger, from, to) that record a transition
    allowed: Mapping[str, frozenset[str]]  # per state, from the `transitions` machine itself
    onward: Mapping[str, tuple[str, ...]]  # allowed triggers: moving on, staying, ending
    moving: Mapping[str, tuple[str, ...]]  # allowed triggers that lead to another live state
    callbacks: Mapping[tuple[str, str], frozenset[str]]  # (state, trigger) -> callback names

    @classmethod
    def build(cls, lifecycle: Lifecycle) -> Kit:
        definition = lifecycle.definition
        guard_impls: dict[str, Guard] = {}
        callback_names: set[str] = set()
        callbacks: dict[tuple[str, str], frozenset[str]] = {}
        for trigger in definition.triggers:
            for state in definition.state_names:
                found = lifecycle.candidates(state, trigger) or ()
                for candidate in found:
                    for name, guard, _want in candidate.checks:
                        guard_impls[name] = guard
                    callback_names.update(name for name, _fn in candidate.callbacks)
                callbacks[state, trigger] = frozenset(
                    name for c in found for name, _fn in c.callbacks
                )
        reference = Lifecycle(
            definition,
            guards={name: _named_guard(name, fn) for name, fn in guard_impls.items()},
            callbacks=dict.fromkeys(callback_names, _no_callback),
        )
        machine_events: Mapping[str, Any] = reference.machine.events
        allowed = {
            state: frozenset(t for t, ev in machine_events.items() if state in ev.transitions)
            for state in definition.state_names
        }
        dests: dict[tuple[str, str], set[str]] = {}
        for t in definition.transitions:
            for source in t.sources:
                dest = source if t.dest == SAME_STATE else t.dest
                dests.setdefault((t.trigger, source), set()).add(dest)

        def rank(trigger: str, state: str) -> tuple[int, str]:
            found = dests.get((trigger, state), set())
            if found & definition.terminal_states:
                return 2, trigger  # may end the entity: last
            return (0 if found - {state} else 1), trigger  # moving on first, staying next

        onward = {
            state: tuple(sorted(triggers, key=lambda t: rank(t, state)))
            for state, triggers in allowed.items()
        }
        moving = {
            state: tuple(t for t in triggers if rank(t, state)[0] == 0)
            for state, triggers in onward.items()
        }
        moves: set[tuple[str, str, str]] = set()
        for t in definition.transitions:
            for source in t.sources:
                if t.dest not in (SAME_STATE, source):
                    moves.add((t.trigger, source, t.dest))
        return cls(lifecycle, reference, frozenset(moves), allowed, onward, moving, callbacks)
