"""Lifecycle definitions as data: parsing, validation (every problem at once) and versioning."""

from __future__ import annotations

import hashlib
import json
import keyword
import math
import re
import reprlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsm.cascade import parent_events
from fsm.documents import DocumentError, read_document
from fsm.errors import DefinitionError

ANY_STATE = "*"
SAME_STATE = "="  # as a destination: stay where you are (an observation that changes nothing)
DEFAULT_TIME_LIMIT_EVENT = "time_limit"
BUILTIN_GUARDS = frozenset({"time_limit_exceeded", "current_operation"})
MAX_SECONDS = 10 * 365 * 24 * 3600.0  # longer limits or intervals are mistakes, and overflow

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,199}$")
_TRIGGER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
_RESERVED_TRIGGERS = frozenset({"state", "trigger", "machine"})
_STATE_KEYS = frozenset({"name", "initial", "terminal", "time_limit", "on_time_limit", "refresh"})
_TRANSITION_KEYS = frozenset({"trigger", "source", "dest", "guards", "unless", "after"})
_TOP_KEYS = frozenset({"name", "description", "states", "transitions", "parent_events"})
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 60, 60, 4, 4


@dataclass(frozen=True, slots=True)
class StateSpec:
    """A state: terminal states absorb; a time limit fires `on_time_limit` when exceeded."""

    name: str
    initial: bool = False
    terminal: bool = False
    time_limit: float | None = None
    on_time_limit: str | None = None
    refresh: float | None = None


@dataclass(frozen=True, slots=True)
class TransitionSpec:
    """`trigger` moves any of `sources` to `dest` when all `guards` hold and no `unless` does."""

    trigger: str
    sources: tuple[str, ...]
    dest: str
    guards: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Definition:
    """A validated lifecycle definition; build one with `from_dict` or `load_definition`."""

    name: str
    states: tuple[StateSpec, ...]
    transitions: tuple[TransitionSpec, ...]
    description: str = ""
    #: (terminal state, the event its parent gets in the same transaction): see fsm.cascade
    parent_events: tuple[tuple[str, str], ...] = ()

    @property
    def initial(self) -> str:
        return next(s.name for s in self.states if s.initial)

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    @property
    def terminal_states(self) -> frozenset[str]:
        return frozenset(s.name for s in self.states if s.terminal)

    def state(self, name: str) -> StateSpec:
        for spec in self.states:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def triggers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.trigger for t in self.transitions))

    def to_dict(self) -> dict[str, Any]:
        """The normalised form: what the version hashes and what the database keeps."""
        states = []
        for s in self.states:
            entry: dict[str, Any] = {"name": s.name}
            if s.initial:
                entry["initial"] = True
            if s.terminal:
                entry["terminal"] = True
            if s.time_limit is not None:
                entry["time_limit"] = s.time_limit
                entry["on_time_limit"] = s.on_time_limit
            if s.refresh is not None:
                entry["refresh"] = s.refresh
            states.append(entry)
        transitions = []
        for t in self.transitions:
            item: dict[str, Any] = {"trigger": t.trigger, "source": list(t.sources), "dest": t.dest}
            for key in ("guards", "unless", "after"):
                if getattr(t, key):
                    item[key] = list(getattr(t, key))
            transitions.append(item)
        body = {"name": self.name, "states": states, "transitions": transitions}
        return {**body, "parent_events": dict(self.parent_events)} if self.parent_events else body

    @property
    def version(self) -> str:
        """A stable hash of the normalised form (the description does not count)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, raw: Any, *, known_guards: Iterable[str] = ()) -> Definition:
        """Parse and validate; raises `DefinitionError` listing every problem found."""
        return _Parser(raw, frozenset(known_guards) | BUILTIN_GUARDS).parse()


def load_definition(path: str | Path, *, known_guards: Iterable[str] = ()) -> Definition:
    """Read a definition from a YAML or JSON file (bounded: see `fsm.documents`)."""
    file = Path(path)
    try:
        raw = read_document(file)
    except DocumentError as exc:
        raise DefinitionError(file.name, [str(exc)]) from exc
    return Definition.from_dict(raw, known_guards=known_guards)


def _shown(value: Any) -> str:
    """A short repr: a problem names the bad value, without printing all of a huge one."""
    return _REPR.repr(value)


class _Parser:
    """Collects every problem instead of stopping at the first."""

    def __init__(self, raw: Any, known_guards: frozenset[str]) -> None:
        self.raw = raw
        self.known_guards = known_guards
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def parse(self) -> Definition:
        raw = self.raw
        if not isinstance(raw, Mapping):
            raise DefinitionError(
                "?", ["a definition must be a mapping with name, states, transitions"]
            )
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            self.problem(f"name must be an identifier-like string, got {_shown(name)}")
            name = str(name)
        for key in sorted(set(raw) - _TOP_KEYS, key=str):
            self.problem(f"unknown top-level key {_shown(key)}")
        description = raw.get("description", "")
        if not isinstance(description, str):
            self.problem("description must be a string")
            description = ""
        states = self._states(raw.get("states"))
        transitions = self._transitions(raw.get("transitions"), states)
        if states:
            self._check_graph(states, transitions)
        parents = parent_events(raw.get("parent_events"), states, self.problem)
        if self.problems:
            raise DefinitionError(name, self.problems)
        return Definition(name, tuple(states.values()), tuple(transitions), description, parents)

    # -- states --------------------------------------------------------------------------------

    def _states(self, raw: Any) -> dict[str, StateSpec]:
        if not isinstance(raw, list) or not raw:
            self.problem("states must be a non-empty list")
            return {}
        states: dict[str, StateSpec] = {}
        for index, item in enumerate(raw):
            spec = self._state(index, item)
            if spec is None:
                continue
            if spec.name in states:
                self.problem(f"duplicate state name {spec.name!r}")
                continue
            states[spec.name] = spec
        initial = [s.name for s in states.values() if s.initial]
        if not initial:
            self.problem("no initial state (mark exactly one state with initial: true)")
        elif len(initial) > 1:
            self.problem(f"several initial states: {', '.join(initial)}")
        return states

    def _state(self, index: int, item: Any) -> StateSpec | None:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping):
            self.problem(f"states[{index}] must be a mapping or a name")
            return None
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            self.problem(f"states[{index}] has an invalid name {_shown(name)}")
            return None
        for key in sorted(set(item) - _STATE_KEYS, key=str):
            self.problem(f"state {name!r}: unknown key {_shown(key)}")
        initial = self._flag(item, "initial", f"state {name!r}")
        terminal = self._flag(item, "terminal", f"state {name!r}")
        time_limit = self._seconds(item, "time_limit", f"state {name!r}")
        refresh = self._seconds(item, "refresh", f"state {name!r}")
        on_time_limit = item.get("on_time_limit")
        if on_time_limit is not None and not (
            isinstance(on_time_limit, str) and _TRIGGER.fullmatch(on_time_limit)
        ):
            self.problem(f"state {name!r}: on_time_limit must be a trigger name")
            on_time_limit = None
        if time_limit is None and on_time_limit is not None:
            self.problem(f"state {name!r}: on_time_limit without a time_limit")
        if time_limit is not None:
            on_time_limit = on_time_limit or DEFAULT_TIME_LIMIT_EVENT
            if terminal:
                self.problem(f"state {name!r} is terminal and cannot have a time limit")
        if terminal and refresh is not None:
            self.problem(f"state {name!r} is terminal and cannot have a refresh interval")
        return StateSpec(name, initial, terminal, time_limit, on_time_limit, refresh)

    def _flag(self, item: Mapping[str, Any], key: str, where: str) -> bool:
        value = item.get(key, False)
        if not isinstance(value, bool):
            self.problem(f"{where}: {key} must be true or false")
            return False
        return value

    def _seconds(self, item: Mapping[str, Any], key: str, where: str) -> float | None:
        value = item.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            self.problem(
                f"{where}: {key} must be a positive number of seconds, got {_shown(value)}"
            )
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(f"{where}: {key} must be finite")
            return None
        if value > MAX_SECONDS:  # big ints are compared exactly, never converted
            self.problem(f"{where}: {key} must be at most {MAX_SECONDS:.0f} s (ten years)")
            return None
        return float(value)

    # -- transitions ---------------------------------------------------------------------------

    def _transitions(self, raw: Any, states: Mapping[str, StateSpec]) -> list[TransitionSpec]:
        if not isinstance(raw, list):
            self.problem("transitions must be a list")
            return []
        result: list[TransitionSpec] = []
        seen: set[tuple[str, str, str, tuple[str, ...], tuple[str, ...]]] = set()
        unguarded: set[tuple[str, str]] = set()
        for index, item in enumerate(raw):
            spec = self._transition(index, item, states)
            if spec is None:
                continue
            for source in spec.sources:
                key = (spec.trigger, source, spec.dest, spec.guards, spec.unless)
                if key in seen:
                    self.problem(f"duplicate transition {spec.trigger!r}: {source} -> {spec.dest}")
                elif (spec.trigger, source) in unguarded:
                    self.problem(
                        f"transition {spec.trigger!r}: {source} -> {spec.dest} can never fire: "
                        f"an earlier unguarded {spec.trigger!r} from {source} always wins"
                    )
                seen.add(key)
                if not spec.guards and not spec.unless:
                    unguarded.add((spec.trigger, source))
            result.append(spec)
        return result

    def _names(self, value: Any, where: str, what: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(f"{where}: {what} must be a name or a list of names")
            return ()
        return tuple(value)

    def _transition(
        self, index: int, item: Any, states: Mapping[str, StateSpec]
    ) -> TransitionSpec | None:
        where = f"transitions[{index}]"
        if not isinstance(item, Mapping):
            self.problem(f"{where} must be a mapping with trigger, source, dest")
            return None
        trigger = item.get("trigger")
        if not isinstance(trigger, str) or not _TRIGGER.fullmatch(trigger):
            self.problem(f"{where}: trigger must be an identifier, got {_shown(trigger)}")
            return None
        if keyword.iskeyword(trigger) or trigger in _RESERVED_TRIGGERS:
            self.problem(f"{where}: trigger name {trigger!r} is reserved")
        where = f"{where} ({trigger})"
        for key in sorted(set(item) - _TRANSITION_KEYS, key=str):
            self.problem(f"{where}: unknown key {_shown(key)}")
        raw_sources = self._names(item.get("source"), where, "source")
        if not raw_sources:
            self.problem(f"{where}: no source state")
        dest = item.get("dest")
        if not isinstance(dest, str):
            self.problem(f"{where}: dest must be a state name")
            return None
        if dest != SAME_STATE and dest not in states:
            self.problem(f"{where}: unknown destination state {_shown(dest)}")
        sources: list[str] = []
        for source in raw_sources:
            if source == ANY_STATE:
                sources.extend(s.name for s in states.values() if not s.terminal)
            elif source not in states:
                self.problem(f"{where}: unknown source state {_shown(source)}")
            elif states[source].terminal:
                self.problem(f"{where}: leaves terminal state {_shown(source)}")
            else:
                sources.append(source)
        guards = self._names(item.get("guards"), where, "guards")
        unless = self._names(item.get("unless"), where, "unless")
        after = self._names(item.get("after"), where, "after")
        for guard in (*guards, *unless):
            if guard not in self.known_guards:
                self.problem(f"{where}: unknown guard {_shown(guard)}")
        # the order of sources means nothing: sorted, so the version does not depend on it
        return TransitionSpec(trigger, tuple(sorted(set(sources))), dest, guards, unless, after)

    # -- graph ---------------------------------------------------------------------------------

    def _check_graph(
        self, states: Mapping[str, StateSpec], transitions: list[TransitionSpec]
    ) -> None:
        edges: dict[str, set[str]] = {name: set() for name in states}
        for t in transitions:
            for source in t.sources:
                dest = source if t.dest == SAME_STATE else t.dest
                if dest in states:
                    edges[source].add(dest)
        for spec in states.values():
            if spec.time_limit is not None and spec.on_time_limit is not None:
                fires = any(
                    t.trigger == spec.on_time_limit and spec.name in t.sources for t in transitions
                )
                if not fires:
                    self.problem(
                        f"state {spec.name!r} has a time limit, but no transition "
                        f"{spec.on_time_limit!r} leaves it"
                    )
        initial = [s.name for s in states.values() if s.initial]
        if len(initial) == 1:
            reachable = _reachable(initial[0], edges)
            for name in states:
                if name not in reachable:
                    self.problem(f"state {name!r} is unreachable from {initial[0]!r}")
        terminals = {s.name for s in states.values() if s.terminal}
        if not terminals:
            self.problem("no terminal state: every lifecycle must be able to end")
            return
        reverse: dict[str, set[str]] = {name: set() for name in states}
        for source, dests in edges.items():
            for dest in dests:
                reverse[dest].add(source)
        can_finish: set[str] = set()
        for terminal in terminals:
            can_finish |= _reachable(terminal, reverse)
        for name, spec in states.items():
            if not spec.terminal and name not in can_finish:
                self.problem(f"state {name!r} is a trap: no terminal state can be reached from it")


def _reachable(start: str, edges: Mapping[str, set[str]]) -> set[str]:
    seen = {start}
    queue = deque([start])
    while queue:
        for nxt in edges[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen
