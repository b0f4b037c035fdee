"""A definition compiled once into a `transitions` machine, plus the dispatch table derived from it.

One `Machine(model=None, auto_transitions=False)` per definition, never one per entity. The engine's
hot path looks transitions up in a table read off that machine's events, so applying an event costs
a dict lookup and the guards, not a model swap; `reference_next_state` runs the machine itself and
the property tests check that both always agree.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from transitions import Machine, MachineError

from fsm.context import BUILTIN_GUARDS, Callback, EventContext, Guard
from fsm.definition import Definition
from fsm.errors import DefinitionError


class _GuardAdapter:
    """Lets a guard of ours serve as a `transitions` condition (which receives EventData)."""

    __slots__ = ("guard", "name")

    def __init__(self, name: str, guard: Guard) -> None:
        self.name = name
        self.guard = guard

    def __call__(self, event_data: Any) -> bool:
        return bool(self.guard(event_data.kwargs["ctx"]))


class _CallbackAdapter:
    """Lets a callback of ours serve as a `transitions` `after` callback."""

    __slots__ = ("callback", "name")

    def __init__(self, name: str, callback: Callback) -> None:
        self.name = name
        self.callback = callback

    def __call__(self, event_data: Any) -> None:
        self.callback(event_data.kwargs["ctx"], event_data.transition.dest)


@dataclass(frozen=True, slots=True)
class CompiledTransition:
    """One candidate for (trigger, source): its destination, the checks and the callbacks."""

    dest: str
    checks: tuple[tuple[str, Guard, bool], ...]  # (name, guard, value it must return)
    callbacks: tuple[tuple[str, Callback], ...]


class HookFailed(Exception):
    """A guard or callback raised; carries its name and the original exception."""

    def __init__(self, name: str, cause: BaseException) -> None:
        super().__init__(name, cause)
        self.name = name
        self.cause = cause


def _check(name: str, guard: Guard, ctx: EventContext) -> bool:
    try:
        return bool(guard(ctx))
    except Exception as exc:
        raise HookFailed(name, exc) from exc


class _Cursor:
    """The single model the reference machine moves; its state is set before every use."""

    state: str


class Lifecycle:
    """A validated definition, its guards and callbacks, compiled for fast application."""

    def __init__(
        self,
        definition: Definition,
        *,
        guards: Mapping[str, Guard] | None = None,
        callbacks: Mapping[str, Callback] | None = None,
    ) -> None:
        self.definition = definition
        self.name = definition.name
        self.version = definition.version
        self.initial = definition.initial
        all_guards = {**BUILTIN_GUARDS, **(guards or {})}
        all_callbacks = dict(callbacks or {})
        self._check_names(all_guards, all_callbacks)
        adapters = {name: _GuardAdapter(name, fn) for name, fn in all_guards.items()}
        hooks = {name: _CallbackAdapter(name, fn) for name, fn in all_callbacks.items()}
        self.machine = Machine(
            model=None,
            states=list(definition.state_names),
            initial=definition.initial,
            auto_transitions=False,
            send_event=True,
        )
        # a state's time-limit event leaves it only once the limit is exceeded, whoever fires
        # it (the timer, `fire`, `apply`, a command): the rule is part of every definition
        expired = _GuardAdapter("time_limit_exceeded", BUILTIN_GUARDS["time_limit_exceeded"])
        timed = {s.name: s.on_time_limit for s in definition.states if s.on_time_limit}
        for t in definition.transitions:
            limited = [s for s in t.sources if timed.get(s) == t.trigger]
            plain = [s for s in t.sources if timed.get(s) != t.trigger]
            for sources, extra in ((plain, []), (limited, [expired])):
                if not sources:
                    continue
                self.machine.add_transition(
                    t.trigger,
                    list[Any](sources),
                    t.dest,
                    conditions=[*(adapters[g] for g in t.guards), *extra],
                    unless=[adapters[g] for g in t.unless],
                    after=[hooks[c] for c in t.after],
                )
        self._table = self._compile()
        #: (state, trigger) -> candidates: the hot path's one lookup per event
        self.pairs: dict[tuple[str, str], tuple[CompiledTransition, ...]] = {
            (source, trigger): found
            for trigger, by_source in self._table.items()
            for source, found in by_source.items()
        }
        self.terminal = definition.terminal_states
        self.parent_events: dict[str, str] = dict(definition.parent_events)
        self.states = {s.name: s for s in definition.states}
        self.allowed: dict[str, tuple[str, ...]] = {
            state: tuple(sorted(trig for trig, by_src in self._table.items() if state in by_src))
            for state in definition.state_names
        }
        self._cursor_lock = threading.Lock()
        self._cursor: _Cursor | None = None

    def _check_names(self, guards: Mapping[str, Guard], callbacks: Mapping[str, Callback]) -> None:
        problems = []
        for t in self.definition.transitions:
            problems += [
                f"guard {g!r} has no implementation"
                for g in (*t.guards, *t.unless)
                if g not in guards
            ]
            problems += [
                f"callback {c!r} has no implementation" for c in t.after if c not in callbacks
            ]
        if problems:
            raise DefinitionError(self.definition.name, sorted(set(problems)))

    def _compile(self) -> dict[str, dict[str, tuple[CompiledTransition, ...]]]:
        table: dict[str, dict[str, tuple[CompiledTransition, ...]]] = {}
        for trigger, event in self.machine.events.items():
            by_source: dict[str, tuple[CompiledTransition, ...]] = {}
            for source, candidates in event.transitions.items():
                compiled = []
                for candidate in candidates:
                    checks = []
                    for condition in candidate.conditions:
                        adapter = condition.func
                        assert isinstance(adapter, _GuardAdapter)
                        checks.append((adapter.name, adapter.guard, bool(condition.target)))
                    after = []
                    for hook in candidate.after:
                        assert isinstance(hook, _CallbackAdapter)
                        after.append((hook.name, hook.callback))
                    assert candidate.dest is not None
                    compiled.append(CompiledTransition(candidate.dest, tuple(checks), tuple(after)))
                by_source[source] = tuple(compiled)
            table[trigger] = by_source
        return table

    def candidates(self, state: str, trigger: str) -> tuple[CompiledTransition, ...] | None:
        """Transitions `trigger` may take from `state`, by priority; None if not allowed."""
        return self.pairs.get((state, trigger))

    def choose(
        self, state: str, trigger: str, context: Callable[[], EventContext]
    ) -> CompiledTransition | None:
        """The first candidate whose guards hold (None: allowed, but no guard let it through).

        Raises `KeyError` when the trigger is not allowed in `state` at all.
        """
        found = self.pairs.get((state, trigger))
        if found is None:
            raise KeyError(trigger)
        return self.choose_from(found, context)

    @staticmethod
    def choose_from(
        found: tuple[CompiledTransition, ...], context: Callable[[], EventContext]
    ) -> CompiledTransition | None:
        """The first of `found` (the `pairs` entry of a state and trigger) whose guards hold;
        None: no guard let one through. The context is built only if a guard needs it."""
        ctx: EventContext | None = None
        for candidate in found:
            if not candidate.checks:
                return candidate
            if ctx is None:
                ctx = context()
            if all(_check(name, guard, ctx) is want for name, guard, want in candidate.checks):
                return candidate
        return None

    def held_by(self, state: str, trigger: str, ctx: EventContext) -> tuple[str, ...]:
        """The guards that kept every candidate from firing (`not NAME` for an `unless`), in
        definition order: what an outcome shows for an event that was allowed but held."""
        names: list[str] = []
        for candidate in self.candidates(state, trigger) or ():
            for name, guard, want in candidate.checks:
                if _check(name, guard, ctx) is not want:
                    shown = name if want else f"not {name}"
                    if shown not in names:
                        names.append(shown)
        return tuple(names)

    def reference_next_state(self, state: str, trigger: str, ctx: EventContext) -> str | None:
        """Run `transitions` itself on a cursor model; None if the trigger is not allowed.

        Slow and serialised: for tests that check the compiled table against the library.
        """
        with self._cursor_lock:
            if self._cursor is None:
                self._cursor = _Cursor()
                self.machine.add_model(self._cursor, initial=self.initial)
            self.machine.set_state(state, model=self._cursor)
            try:
                self.machine.events[trigger].trigger(self._cursor, ctx=ctx)
            except (MachineError, KeyError):
                return None
            return self._cursor.state

    def is_terminal(self, state: str) -> bool:
        return state in self.terminal
