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

import json
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from fsm.clock import ManualClock
from fsm.context import Callback, EventContext, Guard
from fsm.definition import MAX_SECONDS, SAME_STATE, Definition, load_definition
from fsm.engine import Engine
from fsm.errors import CallbackError, DefinitionError, InvalidEvent
from fsm.events import Event, Outcome
from fsm.lifecycle import Lifecycle
from fsm.redaction import redact
from fsm.testing_deadlines import Look, LookRecorder, deadline_violations
from storage import EntityNotFound, EntityRow, TransitionRow, VersionConflict
from storage.tables import entity_table, scheduled_command_table, transition_table

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

EntityInvariant = Callable[[Engine, EntityRow], None]
"""A check of your own, run on every entity after every step; raise (or assert) to fail."""

CANARY = "CANARY-SECRET-"
"""Prefix of the values the kit sends under secret-looking payload keys; never seen in history."""

SECRET_KEYS = (
    "password",
    "api_key",
    "accessToken",
    "client-secret",
    "sshKey",
    "token",
    "db_password",
    "Authorization",
)
"""Payload keys the redaction rules call secret; the kit puts canary values under them."""

_PLAIN_KEYS = ("job_id", "exit_code", "message", "node", "attempt", "details")
_UNKNOWN_TRIGGER = "no_such_event"
_UNKNOWN_ENTITY = "no-such-entity"
_HEAD_FIELDS = (
    "id",
    "lifecycle",
    "definition_version",
    "state",
    "terminal",
    "version",
    "seq",
    "state_entered_at",
    "deadline_at",
    "created_at",
    "data",
)
_START = datetime.fromisoformat("2026-01-01T00:00:00+00:00")


class InvariantViolation(AssertionError):
    """The engine or the database broke a rule the kit checks."""


def _fail(message: str) -> InvariantViolation:
    return InvariantViolation(message)


# -- static checks ------------------------------------------------------------------------------


def check_definition(
    source: Definition | Mapping[str, Any] | str | os.PathLike[str],
    *,
    known_guards: Iterable[str] = (),
    known_callbacks: Iterable[str] | None = None,
) -> list[str]:
    """Every problem of a definition (a `Definition`, a raw mapping or a YAML/JSON file path).

    Returns an empty list for a valid definition. Guards other than the built-in ones must be
    named in `known_guards`; when `known_callbacks` is given, `after` callbacks must be in it.
    A `Definition` built by hand (bypassing `from_dict`) is re-validated from its normal form.
    """
    guards = frozenset(known_guards)
    try:
        if isinstance(source, Definition):
            definition = Definition.from_dict(source.to_dict(), known_guards=guards)
        elif isinstance(source, Mapping):
            definition = Definition.from_dict(source, known_guards=guards)
        else:
            definition = load_definition(Path(source), known_guards=guards)
    except DefinitionError as exc:
        return list(exc.problems)
    problems: list[str] = []
    if known_callbacks is not None:
        callbacks = frozenset(known_callbacks)
        for index, t in enumerate(definition.transitions):
            problems += [
                f"transitions[{index}] ({t.trigger}): unknown callback {name!r}"
                for name in t.after
                if name not in callbacks
            ]
    return problems


# -- the model ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Model:
    """What the kit expects one entity (head and history) to be."""

    id: str
    lifecycle: str
    definition_version: str
    state: str
    terminal: bool
    version: int
    entered_at: datetime
    deadline_at: datetime | None
    created_at: datetime
    data: dict[str, Any]
    history: list[TransitionRow] = field(default_factory=list)

    @property
    def seq(self) -> int:
        return len(self.history)


class _Guess(NamedTuple):
    """The predicted effect of one event: its kind, the model afterwards, and details."""

    kind: str  # "conflict" | "invalid" | "hook" | "kept" | "moved" | "missing"
    after: _Model | None = None
    hook: str | None = None  # the guard that raised (kind "hook")
    hook_error: type[BaseException] | None = None


class PlannedEvent(NamedTuple):
    """One event of a random batch, as the state machine draws it."""

    entity: int  # index into the entities created so far; -1: an id that does not exist
    event: str
    payload: dict[str, Any] | None = None
    version: str = "none"  # "none" | "current" | "stale"
    data: dict[str, Any] | None = None


class _GuardRaised(Exception):
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
            raise _GuardRaised(name, exc) from exc

    return check


def _no_callback(_ctx: EventContext, _dest: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class _Kit:
    """One lifecycle as the kit uses it: the engine's copy and the reference copy."""

    lifecycle: Lifecycle
    reference: Lifecycle
    legal_moves: frozenset[tuple[str, str, str]]  # (trigger, from, to) that record a transition
    allowed: Mapping[str, frozenset[str]]  # per state, from the `transitions` machine itself
    onward: Mapping[str, tuple[str, ...]]  # allowed triggers: moving on, staying, ending
    moving: Mapping[str, tuple[str, ...]]  # allowed triggers that lead to another live state
    callbacks: Mapping[tuple[str, str], frozenset[str]]  # (state, trigger) -> callback names

    @classmethod
    def build(cls, lifecycle: Lifecycle) -> _Kit:
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


def _deadline(
    lifecycle: Lifecycle, state: str, entered: datetime, data: Mapping[str, Any]
) -> datetime | None:
    """The documented rule: a state with a time limit has a deadline, its limit replaced by a
    positive `data["time_limits"][state]` of at most ten years; a state without a limit has
    none, whatever the data says (it would have no event to fire)."""
    limit = lifecycle.states[state].time_limit
    if limit is None:
        return None
    overrides = data.get("time_limits")
    if isinstance(overrides, Mapping):
        custom = overrides.get(state)
        if (
            isinstance(custom, (int, float))
            and not isinstance(custom, bool)
            and 0 < custom <= MAX_SECONDS
        ):
            limit = float(custom)
    return entered + timedelta(seconds=limit)


def _canaries(value: Any) -> bool:
    """Whether a canary secret value occurs anywhere in `value`."""
    return CANARY in json.dumps(value, default=str)


# -- the database each example runs on ----------------------------------------------------------


class _Resources:
    """One engine, clock and (by default) temporary SQLite file shared by a machine's examples.

    Opening an engine and migrating costs far more than an example, so every example of a machine
    class reuses them; the tables are emptied before and after each example instead.
    """

    def __init__(self, db_url: str | None, lifecycles: Sequence[Lifecycle]) -> None:
        self.folder: str | None = None
        if db_url is None:
            self.folder = tempfile.mkdtemp(prefix="fsm-testing-")
            db_url = f"sqlite:///{Path(self.folder) / 'fsm.db'}"
        self.clock = ManualClock(_START)
        self.engine = Engine(db_url, lifecycles=lifecycles, clock=self.clock)
        if self.engine.list_entities(limit=1):
            self.engine.close()
            raise ValueError(
                "lifecycle_state_machine needs an empty scratch database (it deletes every entity "
                "and transition in it between examples), but this one has entities"
            )
        self._finalizer = weakref.finalize(self, _release, self.engine, self.folder)

    def wipe(self) -> None:
        with self.engine.store.engine.begin() as conn:
            conn.execute(transition_table.delete())
            conn.execute(scheduled_command_table.delete())
            conn.execute(entity_table.delete())

    def close(self) -> None:
        self._finalizer()


def _release(engine: Engine, folder: str | None) -> None:
    engine.close()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class _Config:
    kits: Mapping[str, _Kit]
    db_url: str | None
    invariants: tuple[EntityInvariant, ...]
    max_entities: int
    max_advance: float
    verify_every_step: bool
    callbacks_may_raise: bool


# -- the state machine --------------------------------------------------------------------------


class LifecycleStateMachine(RuleBasedStateMachine):
    """Base class of the machines `lifecycle_state_machine` builds; not used directly.

    `engine` and `clock` are the running example's engine and manual clock; `entities` holds the
    ids created so far, in order.
    """

    _config: ClassVar[_Config]
    _resources: ClassVar[_Resources | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        super().__init__()
        resources = self._acquire()
        resources.wipe()
        resources.clock.now = _START
        self.engine = resources.engine
        self.clock = resources.clock
        self.entities: list[str] = []
        self._models: dict[str, _Model] = {}
        self._rows: list[EntityRow] = []  # the heads as last read back
        self._unread = False  # the engine was called since the database was last read back
        self._checked: tuple[_Model, ...] = ()  # the models when the database was last read
        self._verified: tuple[_Model, ...] = ()  # the models when verify() last ran
        self._healthy = True  # no step failed: the final check at teardown makes sense
        self._turn = 0  # turns the list of allowed triggers for `act_on_live_entity`

    @classmethod
    def _acquire(cls) -> _Resources:
        with cls._lock:
            if cls._resources is None:
                config = cls._config
                lifecycles = [kit.lifecycle for kit in config.kits.values()]
                cls._resources = _Resources(config.db_url, lifecycles)
            return cls._resources

    @classmethod
    def close(cls) -> None:
        """Close the shared engine (and delete the temporary database); the next run reopens."""
        with cls._lock:
            if cls._resources is not None:
                cls._resources.close()
                cls._resources = None

    def teardown(self) -> None:
        resources = type(self)._resources
        try:
            if self._healthy:
                if self._unread:
                    self._read_back()
                if self._changed_since(self._verified):
                    self._verify()
        finally:
            if resources is not None:
                resources.wipe()

    # -- helpers ---------------------------------------------------------------------------

    def _pick(self, index: int) -> _Model:
        """An entity by index, live ones first (terminal ones get `refuse_on_terminal`)."""
        ordered = sorted(self._models.values(), key=lambda m: m.terminal)
        return ordered[index % len(ordered)]

    def _kit(self, model: _Model) -> _Kit:
        return self._config.kits[model.lifecycle]

    def _live(self) -> list[_Model]:
        """The entities not in a terminal state, in creation order."""
        return [m for m in self._models.values() if not m.terminal]

    def _room_for_more(self) -> bool:
        """Below `entities` live ones (finished entities make room), and a bounded total."""
        cap = self._config.max_entities
        return len(self._live()) < cap and len(self.entities) < 3 * cap

    def _overdue(self) -> list[_Model]:
        now = self.clock.now
        return [
            m
            for m in self._models.values()
            if m.deadline_at is not None
            and m.deadline_at <= now
            and not m.terminal
            and self._kit(m).lifecycle.states[m.state].on_time_limit is not None
        ]

    def _guess(self, model: _Model, event: Event, now: datetime) -> _Guess:
        """What the engine must do with `event`, decided by the `transitions` library."""
        if event.expected_version is not None and event.expected_version != model.version:
            return _Guess("conflict")
        kit = self._kit(model)
        observed = event.observed_at or now
        payload = event.payload or {}
        ctx = EventContext(
            model.id,
            model.lifecycle,
            model.state,
            model.data,
            model.entered_at,
            model.deadline_at,
            event.name,
            payload,
            observed,
        )
        try:
            dest = kit.reference.reference_next_state(model.state, event.name, ctx)
        except _GuardRaised as raised:
            return _Guess("hook", hook=raised.name, hook_error=type(raised.cause))
        if dest is None:
            return _Guess("invalid")
        if model.terminal:
            raise _fail(
                f"the transitions machine lets {event.name!r} leave terminal state "
                f"{model.state!r} of {model.lifecycle}"
            )
        data = model.data
        data_changed = False
        if event.data:
            merged = {**data, **event.data}
            if merged != data:
                data, data_changed = merged, True
        if dest == model.state:
            if not data_changed:
                return _Guess("kept", model)
            return _Guess("kept", replace(model, data=data, version=model.version + 1))
        entered = max(observed, model.entered_at)
        lifecycle = kit.lifecycle
        step = TransitionRow(
            entity_id=model.id,
            seq=model.seq + 1,
            from_state=model.state,
            to_state=dest,
            event=event.name,
            source=event.source,
            payload=redact(payload) if payload else {},
            observed_at=observed,
            recorded_at=now,
            definition_version=lifecycle.version,
        )
        after = replace(
            model,
            state=dest,
            terminal=lifecycle.is_terminal(dest),
            version=model.version + 1,
            entered_at=entered,
            deadline_at=_deadline(lifecycle, dest, entered, data),
            data=data,
            definition_version=lifecycle.version,
            history=[*model.history, step],
        )
        return _Guess("moved", after)

    def _judge(self, model: _Model, event: Event, guess: _Guess, outcome: Outcome) -> _Model:
        """Compare one outcome with the guess; return the model the entity has now."""
        error = outcome.error
        where = f"{event.name!r} on {event.entity_id!r}"
        if guess.kind != "moved" and guess.kind != "kept":
            self._judge_refusal(model, event, guess, outcome)
            return model
        if isinstance(error, CallbackError) and guess.kind == "moved":
            names = self._kit(model).callbacks.get((model.state, event.name), frozenset())
            if error.name not in names:
                raise _fail(f"{where}: CallbackError from {error.name!r}, not a callback here")
            if not self._config.callbacks_may_raise:
                raise _fail(f"{where}: callback raised: {error}") from error
            self._same_head(model, outcome, where)
            return model
        if error is not None:
            raise _fail(
                f"{where}: the transitions machine {guess.kind} the entity "
                f"({model.state} -> {guess.after.state if guess.after else '?'}), "
                f"but the engine raised {type(error).__name__}: {error}"
            )
        after = guess.after
        assert after is not None
        if outcome.state != after.state or outcome.version != after.version:
            raise _fail(
                f"{where} in {model.state} (version {model.version}): engine chose "
                f"{outcome.state} (version {outcome.version}), the transitions machine "
                f"{after.state} (version {after.version})"
            )
        expected_row = after.history[-1] if guess.kind == "moved" else None
        if outcome.transition != expected_row:
            raise _fail(f"{where}: recorded {outcome.transition}, expected {expected_row}")
        return after

    def _judge_refusal(self, model: _Model, event: Event, guess: _Guess, outcome: Outcome) -> None:
        error = outcome.error
        where = f"{event.name!r} on {model.id!r} in {model.state}"
        if guess.kind == "conflict":
            if not isinstance(error, VersionConflict) or (error.expected, error.actual) != (
                event.expected_version,
                model.version,
            ):
                raise _fail(
                    f"{where}: expected VersionConflict({event.expected_version} vs "
                    f"{model.version}), got {error!r}"
                )
        elif guess.kind == "invalid":
            allowed = self._kit(model).allowed[model.state]
            if not isinstance(error, InvalidEvent):
                raise _fail(f"{where}: not allowed by the transitions machine, got {outcome}")
            if (error.state, error.event, set(error.allowed)) != (
                model.state,
                event.name,
                set(allowed),
            ):
                raise _fail(
                    f"{where}: InvalidEvent names state {error.state}, event {error.event}, "
                    f"allowed {sorted(error.allowed)}; expected allowed {sorted(allowed)}"
                )
            if model.terminal and error.allowed:
                raise _fail(f"{where}: terminal state allows {error.allowed}")
        elif guess.kind == "hook":
            if not isinstance(error, CallbackError) or error.name != guess.hook:
                raise _fail(
                    f"{where}: guard {guess.hook!r} raised, expected CallbackError: {error!r}"
                )
            if type(error.cause) is not guess.hook_error:
                raise _fail(f"{where}: CallbackError.cause is {error.cause!r}")
        self._same_head(model, outcome, where)

    @staticmethod
    def _same_head(model: _Model, outcome: Outcome, where: str) -> None:
        if outcome.transition is not None or (outcome.state, outcome.version) != (
            model.state,
            model.version,
        ):
            raise _fail(
                f"{where}: a refused event reported state {outcome.state} version "
                f"{outcome.version} transition {outcome.transition}; the entity was "
                f"{model.state} version {model.version}"
            )

    def _fire(self, model: _Model, event: Event) -> _Model:
        """Fire one event with `Engine.fire`, which raises instead of returning errors."""
        now = self.clock.now
        guess = self._guess(model, event, now)
        self._touch()
        try:
            outcome = self.engine.fire(
                event.entity_id,
                event.name,
                event.payload,
                source=event.source,
                observed_at=event.observed_at,
                expected_version=event.expected_version,
                data=event.data,
            )
        except (InvalidEvent, VersionConflict, CallbackError, EntityNotFound) as exc:
            outcome = Outcome(event, model.state, model.version, error=exc)
        else:
            if guess.kind not in ("kept", "moved"):
                raise _fail(f"{event.name!r} on {model.id!r}: expected {guess.kind}, got {outcome}")
        after = self._judge(model, event, guess, outcome)
        self._models[model.id] = after
        return after

    # -- actions (the factory wraps these in rules with the right strategies) ---------------

    def do_create(self, lifecycle: str, data: dict[str, Any]) -> None:
        kit = self._config.kits[lifecycle]
        entity_id = f"e{len(self.entities)}"
        now = self.clock.now
        self._touch()
        row = self.engine.create(lifecycle, data, id=entity_id)
        lc = kit.lifecycle
        model = _Model(
            id=entity_id,
            lifecycle=lifecycle,
            definition_version=lc.version,
            state=lc.initial,
            terminal=lc.is_terminal(lc.initial),
            version=1,
            entered_at=now,
            deadline_at=_deadline(lc, lc.initial, now, data),
            created_at=now,
            data=dict(data),
        )
        self._compare_head(row, model, "create() returned")
        self.entities.append(entity_id)
        self._models[entity_id] = model

    def do_fire(
        self,
        entity: int,
        event: str,
        payload: dict[str, Any] | None,
        data: dict[str, Any] | None,
        observed_ago: float | None,
        version: int | None,
    ) -> None:
        """Fire any trigger; `version` None: unconditional, 0: the current one, else stale."""
        model = self._pick(entity)
        now = self.clock.now
        observed = None if observed_ago is None else now - timedelta(seconds=observed_ago)
        expected = None if version is None else model.version + version
        ev = Event(model.id, event, payload, "user", observed, expected, data)
        after = self._fire(model, ev)
        if after is not model and (model.terminal or version):
            raise _fail(f"{event!r} with expected version {expected} changed {model}")

    def do_advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def do_advance_to_deadline(self, entity: int, offset: float) -> None:
        waiting = [m for m in self._models.values() if m.deadline_at is not None]
        if waiting:
            target = waiting[entity % len(waiting)].deadline_at
            assert target is not None
            moved = target + timedelta(seconds=offset)
            if moved > self.clock.now:
                self.clock.now = moved

    def do_fire_time_limit(self, entity: int, observed_ago: float | None) -> None:
        overdue = self._overdue()
        if not overdue:
            return
        model = overdue[entity % len(overdue)]
        event = self._kit(model).lifecycle.states[model.state].on_time_limit
        assert event is not None
        now = self.clock.now
        observed = None if observed_ago is None else now - timedelta(seconds=observed_ago)
        ev = Event(model.id, event, {"reason": "deadline"}, "timer", observed)
        if self._guess(model, ev, now).kind == "invalid":
            raise _fail(f"{model.state} has a time limit, but {event!r} is not allowed in it")
        self._fire(model, ev)

    def do_apply(self, planned: list[PlannedEvent]) -> None:
        now = self.clock.now
        working = dict(self._models)  # to give "current" / "stale" versions their meaning
        events: list[Event] = []
        for item in planned:
            if item.entity < 0:
                events.append(Event(_UNKNOWN_ENTITY, item.event, item.payload, "batch"))
                continue
            model = working[self._pick(item.entity).id]
            version = {"none": None, "current": model.version, "stale": model.version - 1}
            ev = Event(
                model.id,
                item.event,
                item.payload,
                "batch",
                expected_version=version[item.version],
                data=item.data,
            )
            events.append(ev)
            after = self._guess(model, ev, now).after
            if after is not None:
                working[model.id] = after
        self._touch()
        result = self.engine.apply(events)
        if len(result) != len(events):
            raise _fail(f"apply() returned {len(result)} outcomes for {len(events)} events")
        # replay the batch on the models, in order: each event sees what the earlier ones did
        for ev, outcome in zip(events, result.outcomes, strict=True):
            if outcome.event != ev:
                raise _fail(f"outcome {outcome} is not for event {ev}")
            current = self._models.get(ev.entity_id)
            if current is None:
                if not isinstance(outcome.error, EntityNotFound) or outcome.state is not None:
                    raise _fail(f"{ev.name!r} on an unknown id: expected EntityNotFound: {outcome}")
                continue
            guess = self._guess(current, ev, now)
            self._models[ev.entity_id] = self._judge(current, ev, guess, outcome)
        expected_rows = [o.transition for o in result.outcomes if o.transition is not None]
        if result.transitions != expected_rows:
            raise _fail("BatchResult.transitions disagrees with the outcomes")

    def do_refuse_on_terminal(self, entity: int) -> None:
        finished = [m for m in self._models.values() if m.terminal]
        if not finished:
            return
        model = finished[entity % len(finished)]
        triggers = [*self._kit(model).lifecycle.definition.triggers, _UNKNOWN_TRIGGER]
        self._touch()
        result = self.engine.apply([Event(model.id, t, {"x": 1}) for t in triggers])
        for outcome in result.outcomes:
            error = outcome.error
            if not isinstance(error, InvalidEvent) or error.allowed:
                raise _fail(
                    f"{outcome.event.name!r} on {model.id} in terminal state {model.state} "
                    f"was not refused: {outcome}"
                )
            self._same_head(model, outcome, f"{outcome.event.name!r} on terminal {model.id}")

    # -- the checks after every step -------------------------------------------------------

    def _compare_head(self, row: EntityRow, model: _Model, what: str) -> None:
        seen = (
            row.id,
            row.lifecycle,
            row.definition_version,
            row.state,
            row.terminal,
            row.version,
            row.seq,
            row.state_entered_at,
            row.deadline_at,
            row.created_at,
            row.data,
        )
        want = (
            model.id,
            model.lifecycle,
            model.definition_version,
            model.state,
            model.terminal,
            model.version,
            model.seq,
            model.entered_at,
            model.deadline_at,
            model.created_at,
            model.data,
        )
        if seen != want:
            names = _HEAD_FIELDS
            diff = [
                f"{n}: {s!r} != expected {w!r}"
                for n, s, w in zip(names, seen, want, strict=True)
                if s != w
            ]
            raise _fail(f"{what} entity {model.id}: " + "; ".join(diff))

    def _check_history(self, row: EntityRow, history: list[TransitionRow], model: _Model) -> None:
        kit = self._kit(model)
        state = kit.lifecycle.initial
        for index, t in enumerate(history, start=1):
            where = f"{row.id} seq {t.seq}"
            if t.seq != index:
                raise _fail(f"{row.id}: history seq {t.seq} at position {index} (must be 1..n)")
            if t.from_state != state:
                raise _fail(f"{where} leaves {t.from_state}, but replay says {state}")
            if kit.lifecycle.is_terminal(t.from_state):
                raise _fail(f"{where} leaves terminal state {t.from_state}")
            if (t.event, t.from_state, t.to_state) not in kit.legal_moves:
                raise _fail(f"{where}: {t.event} {t.from_state} -> {t.to_state} is not legal")
            if redact(t.payload) != t.payload or _canaries(t.payload):
                raise _fail(f"{where}: payload {t.payload!r} holds an unredacted secret")
            state = t.to_state
        if row.state != state:
            raise _fail(f"{row.id} is {row.state}, but replaying its history gives {state}")
        if history != model.history:
            raise _fail(f"{row.id}: history {history} differs from expected {model.history}")

    def _touch(self) -> None:
        self._unread = True
        self._healthy = False

    def _read_back(self) -> None:
        """Compare every stored head and history with the model."""
        rows = self.engine.list_entities()
        ids = [r.id for r in rows]
        if sorted(ids) != sorted(self._models):
            raise _fail(f"the database holds {sorted(ids)}, expected {sorted(self._models)}")
        for row in rows:
            self._compare_head(row, self._models[row.id], "stored")
        histories = self.engine.store.histories(ids)
        for row in rows:
            self._check_history(row, histories[row.id], self._models[row.id])
        self._rows = rows
        self._unread = False
        self._checked = tuple(self._models.values())

    def _verify(self) -> None:
        """`engine.verify()` replays every stored history and must find nothing."""
        violations = self.engine.verify()
        if violations:
            raise _fail("engine.verify() found: " + "; ".join(map(str, violations)))
        self._verified = tuple(self._models.values())

    def _changed_since(self, seen: tuple[_Model, ...]) -> bool:
        # a model is replaced, never mutated, when its entity changes
        models = self._models
        return len(models) != len(seen) or any(
            a is not b for a, b in zip(models.values(), seen, strict=False)
        )

    @invariant()
    def database_matches_model(self) -> None:
        """The engine's outcomes matched the model (checked in the rules); now the database.

        After a step the model says changed something, every head and history is read back and
        compared with the model (the kit's replay covers every check `verify()` makes). A step
        that changed nothing is confirmed by the next read-back: the model would not match any
        more. `engine.verify()` runs at the end of every example (on the whole, append-only
        history) or, with `verify_every_step`, after every change. Then the user's invariants.
        """
        if self._unread and self._changed_since(self._checked):
            self._read_back()
            if self._config.verify_every_step:
                self._verify()
        for check in self._config.invariants:
            for row in self._rows:
                try:
                    check(self.engine, row)
                except Exception as exc:
                    name = getattr(check, "__qualname__", repr(check))
                    raise _fail(
                        f"invariant {name} failed for {row.id} in {row.state}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
        self._healthy = True


# -- strategies ---------------------------------------------------------------------------------

_leaf: st.SearchStrategy[Any] = st.one_of(
    st.text(max_size=8),  # too short to spell a canary by chance
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([None, True, False, [], {}]),
)


def _canary(n: int) -> str:
    return f"{CANARY}{n}"


# whole payloads, secrets nested under plain keys and in lists: one cheap draw each
_TEMPLATES: tuple[dict[str, Any], ...] = (
    {"job_id": 4242, "state": "RUNNING"},
    {"password": _canary(1), "user": "alice"},
    {"details": {"node": "n1", "sshKey": _canary(2)}, "exit_code": 0},
    {"attempts": [{"attempt": 1, "db_password": _canary(3)}, {"attempt": 2}]},
    {"Authorization": {"scheme": "Bearer", "value": _canary(4)}, "message": "ok"},
    {"config": {"nested": {"api_key": _canary(5), "accessToken": _canary(6)}}},
    {"client-secret": [_canary(7)], "message": "spécial \u2603 \u0000 chars"},
    {"token": _canary(8), "ratio": 0.1, "big": 2**62, "neg": -0.0, "none": None},
)


def _payloads() -> st.SearchStrategy[dict[str, Any] | None]:
    """No payload, a fixed payload with nested secrets, or one random plain or secret entry."""
    entry = st.one_of(
        st.tuples(st.sampled_from(_PLAIN_KEYS), _leaf),
        st.tuples(st.sampled_from(SECRET_KEYS), st.integers(0, 999).map(_canary)),
    )
    fixed = st.sampled_from([None, None, *_TEMPLATES])
    return st.one_of(
        fixed,
        fixed,
        entry.map(lambda kv: {kv[0]: kv[1]}),
    )


def _data_choices(kits: Mapping[str, _Kit]) -> list[dict[str, Any]]:
    """Entity data to create with or merge in: plain values and per-entity time limits.

    `time_limits` maps a state to its own limit in seconds; values that are not positive
    numbers must be ignored, and so must a `time_limits` that is not a mapping.
    """
    choices: list[dict[str, Any]] = [{}, {"job_id": 7}, {"job_id": 8, "owner": "bob"}]
    limited = sorted(
        {
            (s.name, s.time_limit)
            for kit in kits.values()
            for s in kit.lifecycle.definition.states
            if s.time_limit is not None
        }
    )
    for state, limit in limited:
        choices += [
            {"time_limits": {state: value}}
            for value in (limit / 4, int(limit * 1.5), 0, -1, "10", True, None)
        ]
    if limited:
        choices.append({"time_limits": "soon"})
    return choices


def lifecycle_state_machine(
    lifecycle: Lifecycle | Definition | Sequence[Lifecycle | Definition],
    *,
    db_url: str | None = None,
    invariants: Sequence[EntityInvariant] = (),
    guards: Mapping[str, Guard] | None = None,
    callbacks: Mapping[str, Callback] | None = None,
    entities: int = 3,
    max_advance_seconds: float | None = None,
    verify_every_step: bool = False,
    entity_data: st.SearchStrategy[dict[str, Any]] | None = None,
    callbacks_may_raise: bool = False,
    name: str | None = None,
) -> type[LifecycleStateMachine]:
    """A Hypothesis state machine that drives real entities of `lifecycle` through an `Engine`.

    `lifecycle` is one or several lifecycles (a `Definition` is compiled with `guards` and
    `callbacks`; a `Lifecycle` brings its own). Each example starts from an empty database: a
    temporary SQLite file by default, or `db_url`, which must name an empty scratch database
    (e.g. a fresh PostgreSQL schema): the kit deletes every entity in it between examples.
    `invariants` are your own checks, called as `check(engine, entity)` for every entity after
    every step. At most `entities` entities are live at once (finished ones make room for new
    ones). A clock step moves at most `max_advance_seconds` (default: 1.5 times the longest
    time limit). `engine.verify()` runs at the end of every example; with `verify_every_step`
    after every step that changed something too (slower; the kit's own replay of every history
    after every change already covers what it checks). `entity_data` draws the data entities
    are created with (default: empty, plain values, per-entity `time_limits`); events merge
    more data in as they go.

    Use `Machine.TestCase` as a unittest/pytest test class (its `settings` attribute takes
    Hypothesis settings), or `hypothesis.stateful.run_state_machine_as_test(Machine)` inside a
    test function (then call `Machine.close()` when done, before the database goes away).

    Guards must be pure: the kit asks the `transitions` machine where each event must lead,
    with the same guards (one that raises must surface as `CallbackError`, nothing written).
    Callbacks run in the engine only (the reference machine replaces them with no-ops); one
    that raises fails the test, unless `callbacks_may_raise` (then nothing may be written).
    """
    items = list(lifecycle) if isinstance(lifecycle, Sequence) else [lifecycle]
    if not items:
        raise ValueError("lifecycle_state_machine needs at least one lifecycle")
    if entities < 1:
        raise ValueError(f"entities must be at least 1, got {entities}")
    compiled: list[Lifecycle] = []
    for item in items:
        if isinstance(item, Lifecycle):
            if guards is not None or callbacks is not None:
                raise ValueError("pass guards and callbacks with a Definition, not a Lifecycle")
            compiled.append(item)
        else:
            compiled.append(Lifecycle(item, guards=guards, callbacks=callbacks))
    kits = {lc.name: _Kit.build(lc) for lc in compiled}
    if len(kits) != len(compiled):
        raise ValueError("two lifecycles share a name")
    limits = [s.time_limit for lc in compiled for s in lc.definition.states if s.time_limit]
    longest = max(limits, default=40.0)
    max_advance = max_advance_seconds if max_advance_seconds is not None else 1.5 * longest
    if not max_advance > 0:
        raise ValueError(f"max_advance_seconds must be positive, got {max_advance_seconds}")
    config = _Config(
        kits,
        db_url,
        tuple(invariants),
        entities,
        max_advance,
        verify_every_step,
        callbacks_may_raise,
    )

    names = st.sampled_from(sorted(kits))
    # every trigger, and one no lifecycle knows; Hypothesis favours the first ones, so those
    # that can end an entity come last (they would leave little to explore)
    ending = {
        t.trigger
        for lc in compiled
        for t in lc.definition.transitions
        if t.dest in lc.definition.terminal_states
    }
    everything = {t for lc in compiled for t in lc.definition.triggers}
    triggers = sorted(everything, key=lambda t: (t in ending, t))
    trigger = st.sampled_from([*triggers, _UNKNOWN_TRIGGER])
    index = st.integers(0, entities - 1)
    payload = _payloads()
    data_choices = _data_choices(kits)
    created_with = entity_data if entity_data is not None else st.sampled_from(data_choices)
    event_data = st.sampled_from([None, None, None, *data_choices])
    ago = st.sampled_from([None, None, None, 0.0, 0.5, max_advance / 10, max_advance])
    seconds = st.one_of(
        st.floats(min_value=0, max_value=max_advance),
        st.sampled_from(sorted({0.001, 1.0, *limits})),
    )
    move = st.tuples(
        index, st.sampled_from([False, False, True]), st.integers(0, 31), payload, event_data
    )
    planned = st.builds(
        PlannedEvent,
        entity=st.integers(-1, 3 * entities - 1),  # -1: an unknown id
        event=trigger,
        payload=payload,
        version=st.sampled_from(["none", "none", "current", "stale"]),
        data=event_data,
    )

    def has_entities(self: LifecycleStateMachine) -> bool:
        return bool(self.entities)

    class Machine(LifecycleStateMachine):
        _config = config

        @initialize(lifecycle=names, data=created_with)
        def create_first(self, lifecycle: str, data: dict[str, Any]) -> None:
            self.do_create(lifecycle, data)

        @precondition(lambda self: self._room_for_more())
        @rule(lifecycle=names, data=created_with)
        def create(self, lifecycle: str, data: dict[str, Any]) -> None:
            self.do_create(lifecycle, data)

        # Hypothesis favours rules with fewer arguments (then by name): this one comes first,
        # so that many steps take live entities deeper instead of bouncing off or ending them.
        @precondition(lambda self: bool(self._live()))
        @rule(move=move)
        def act_on_live_entity(self, move: tuple[int, bool, int, Any, Any]) -> None:
            """(entity, any allowed trigger or only those moving on, choice, payload, data)"""
            entity, wide, choice, payload_, merge = move
            live = self._live()
            model = live[entity % len(live)]
            kit = self._kit(model)
            choices = (kit.onward if wide else kit.moving)[model.state] or kit.onward[model.state]
            choices = choices or (_UNKNOWN_TRIGGER,)
            # Hypothesis favours small choices: turning the list each time still visits all
            event = choices[(choice + self._turn) % len(choices)]
            self._turn += 1
            self._fire(model, Event(model.id, event, payload_, "user", data=merge))

        @precondition(has_entities)
        @rule(
            entity=index,
            event=trigger,
            payload=payload,
            data=event_data,
            observed_ago=ago,
            version=st.sampled_from([None, None, None, 0, -1, 1, 3]),
        )
        def fire(
            self,
            entity: int,
            event: str,
            payload: dict[str, Any] | None,
            data: dict[str, Any] | None,
            observed_ago: float | None,
            version: int | None,
        ) -> None:
            self.do_fire(entity, event, payload, data, observed_ago, version)

        @rule(seconds=seconds)
        def advance(self, seconds: float) -> None:
            self.do_advance(seconds)

        @precondition(lambda self: any(m.deadline_at for m in self._models.values()))
        @rule(entity=index, offset=st.sampled_from([-1.0, -0.000001, 0.0, 0.000001, 1.0]))
        def advance_to_deadline(self, entity: int, offset: float) -> None:
            self.do_advance_to_deadline(entity, offset)

        @precondition(lambda self: bool(self._overdue()))
        @rule(entity=index, observed_ago=st.one_of(st.none(), st.just(0.0), st.floats(0, 5)))
        def fire_time_limit(self, entity: int, observed_ago: float | None) -> None:
            self.do_fire_time_limit(entity, observed_ago)

        @precondition(has_entities)
        @rule(planned=st.lists(planned, min_size=1, max_size=3))
        def apply(self, planned: list[PlannedEvent]) -> None:
            self.do_apply(planned)

        @precondition(lambda self: any(m.terminal for m in self._models.values()))
        @rule(entity=index)
        def refuse_on_terminal(self, entity: int) -> None:
            self.do_refuse_on_terminal(entity)

    title = name or "".join("".join(ch for ch in n.title() if ch.isalnum()) for n in sorted(kits))
    Machine.__name__ = Machine.__qualname__ = f"{title}Machine"
    return Machine
