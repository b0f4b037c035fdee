"""`LifecycleStateMachine`: the base class of the machines the kit builds, and its actions."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any, ClassVar

from fsm.errors import InvalidEvent
from fsm.events import Event
from fsm.testkit.judging import Judging
from fsm.testkit.model import (
    START,
    UNKNOWN_ENTITY,
    UNKNOWN_TRIGGER,
    Model,
    PlannedEvent,
    expected_deadline,
    fail,
)
from fsm.testkit.resources import KitConfig, Resources
from storage import EntityNotFound


class LifecycleStateMachine(Judging):
    """Base class of the machines `lifecycle_state_machine` builds; not used directly.

    `engine` and `clock` are the running example's engine and manual clock; `entities` holds the
    ids created so far, in order.
    """

    _config: ClassVar[KitConfig]
    _resources: ClassVar[Resources | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        super().__init__()
        resources = self._acquire()
        resources.wipe()
        resources.clock.now = START
        self.engine = resources.engine
        self.clock = resources.clock
        self.entities = []
        self._models = {}
        self._rows = []  # the heads as last read back
        self._unread = False  # the engine was called since the database was last read back
        self._checked = ()  # the models when the database was last read
        self._verified = ()  # the models when verify() last ran
        self._healthy = True  # no step failed: the final check at teardown makes sense
        self._turn = 0  # turns the list of allowed triggers for `act_on_live_entity`
        self._notes = []
        self._fired: tuple[str, str, Any, Any] | None = None  # the last `fire_event` call

    @classmethod
    def _acquire(cls) -> Resources:
        with cls._lock:
            if cls._resources is None:
                config = cls._config
                lifecycles = [kit.lifecycle for kit in config.kits.values()]
                cls._resources = Resources(config.db_url, lifecycles)
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

    def _repr_step(self, rule: Any, data: Any, result: Any) -> str:
        """Counterexamples name events, not the indices a rule drew: a step that fired one
        event on a live entity prints as the equivalent `fire_event` call, the others carry
        what they fired as a comment."""
        notes, self._notes = self._notes, []
        fired, self._fired = self._fired, None
        line = str(super()._repr_step(rule, data, result))
        if not notes:
            return line
        name = getattr(getattr(rule, "function", None), "__name__", "")
        if name == "act_on_live_entity" and len(notes) == 1 and fired is not None:
            entity_id, event, payload, merge = fired
            call = (
                f"state.fire_event({entity_id!r}, {event!r}, payload={payload!r}, data={merge!r})"
            )
            return f"{call}  # {notes[0]}"
        return f"{line}  # " + "; ".join(notes)

    def fire_event(
        self,
        entity_id: str,
        event: str,
        payload: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Fire `event` on a live entity as a user would (what `act_on_live_entity` does once
        it has chosen the event); printed counterexamples call this."""
        model = self._models[entity_id]
        self._fired = (entity_id, event, payload, data)
        self._fire(model, Event(entity_id, event, payload, "user", data=data))

    # -- helpers ---------------------------------------------------------------------------

    def _pick(self, index: int) -> Model:
        """An entity by index, live ones first (terminal ones get `refuse_on_terminal`)."""
        ordered = sorted(self._models.values(), key=lambda m: m.terminal)
        return ordered[index % len(ordered)]

    def _live(self) -> list[Model]:
        """The entities not in a terminal state, in creation order."""
        return [m for m in self._models.values() if not m.terminal]

    def _room_for_more(self) -> bool:
        """Below `entities` live ones (finished entities make room), and a bounded total."""
        cap = self._config.max_entities
        return len(self._live()) < cap and len(self.entities) < 3 * cap

    def _overdue(self) -> list[Model]:
        now = self.clock.now
        return [
            m
            for m in self._models.values()
            if m.deadline_at is not None
            and m.deadline_at <= now
            and not m.terminal
            and self._kit(m).lifecycle.states[m.state].on_time_limit is not None
        ]

    # -- actions (the factory wraps these in rules with the right strategies) ---------------

    def do_create(self, lifecycle: str, data: dict[str, Any]) -> None:
        kit = self._config.kits[lifecycle]
        entity_id = f"e{len(self.entities)}"
        now = self.clock.now
        self._touch()
        row = self.engine.create(lifecycle, data, id=entity_id)
        lc = kit.lifecycle
        model = Model(
            id=entity_id,
            lifecycle=lifecycle,
            definition_version=lc.version,
            state=lc.initial,
            terminal=lc.is_terminal(lc.initial),
            version=1,
            entered_at=now,
            deadline_at=expected_deadline(lc, lc.initial, now, data),
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
            raise fail(f"{event!r} with expected version {expected} changed {model}")

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
            raise fail(f"{model.state} has a time limit, but {event!r} is not allowed in it")
        self._fire(model, ev)

    def do_apply(self, planned: list[PlannedEvent]) -> None:
        now = self.clock.now
        working = dict(self._models)  # to give "current" / "stale" versions their meaning
        events: list[Event] = []
        for item in planned:
            if item.entity < 0:
                events.append(Event(UNKNOWN_ENTITY, item.event, item.payload, "batch"))
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
            raise fail(f"apply() returned {len(result)} outcomes for {len(events)} events")
        # replay the batch on the models, in order: each event sees what the earlier ones did
        for ev, outcome in zip(events, result.outcomes, strict=True):
            if outcome.event != ev:
                raise fail(f"outcome {outcome} is not for event {ev}")
            current = self._models.get(ev.entity_id)
            if current is None:
                if not isinstance(outcome.error, EntityNotFound) or outcome.state is not None:
                    raise fail(f"{ev.name!r} on an unknown id: expected EntityNotFound: {outcome}")
                continue
            guess = self._guess(current, ev, now)
            self._note_outcome(self._note_event(current, ev), outcome)
            self._models[ev.entity_id] = self._judge(current, ev, guess, outcome)
        expected_rows = [o.transition for o in result.outcomes if o.transition is not None]
        if result.transitions != expected_rows:
            raise fail("BatchResult.transitions disagrees with the outcomes")

    def do_refuse_on_terminal(self, entity: int) -> None:
        finished = [m for m in self._models.values() if m.terminal]
        if not finished:
            return
        model = finished[entity % len(finished)]
        triggers = [*self._kit(model).lifecycle.definition.triggers, UNKNOWN_TRIGGER]
        self._touch()
        result = self.engine.apply([Event(model.id, t, {"x": 1}) for t in triggers])
        for outcome in result.outcomes:
            error = outcome.error
            if not isinstance(error, InvalidEvent) or error.allowed:
                raise fail(
                    f"{outcome.event.name!r} on {model.id} in terminal state {model.state} "
                    f"was not refused: {outcome}"
                )
            self._same_head(model, outcome, f"{outcome.event.name!r} on terminal {model.id}")
