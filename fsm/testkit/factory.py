"""`lifecycle_state_machine`: a Hypothesis rule-based state machine for given lifecycles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize, precondition, rule

from fsm.context import Callback, Guard
from fsm.definition import Definition
from fsm.lifecycle import Lifecycle
from fsm.testkit.machine import LifecycleStateMachine
from fsm.testkit.model import UNKNOWN_TRIGGER, EntityInvariant, PlannedEvent
from fsm.testkit.reference import Kit
from fsm.testkit.resources import KitConfig
from fsm.testkit.strategies import data_choices, payloads


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
    test function (then call `Machine.close()` when done, before the database goes away, and
    pass settings with `deadline=None`: an example commits to a real database at every step, and
    on a loaded machine it outlasts Hypothesis's default 200 ms, which Hypothesis then reports
    as a flaky failure; `TestCase` has no deadline already).

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
    kits = {lc.name: Kit.build(lc) for lc in compiled}
    if len(kits) != len(compiled):
        raise ValueError("two lifecycles share a name")
    limits = [s.time_limit for lc in compiled for s in lc.definition.states if s.time_limit]
    longest = max(limits, default=40.0)
    max_advance = max_advance_seconds if max_advance_seconds is not None else 1.5 * longest
    if not max_advance > 0:
        raise ValueError(f"max_advance_seconds must be positive, got {max_advance_seconds}")
    config = KitConfig(
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
    trigger = st.sampled_from([*triggers, UNKNOWN_TRIGGER])
    index = st.integers(0, entities - 1)
    payload = payloads()
    data_options = data_choices(kits)
    created_with = entity_data if entity_data is not None else st.sampled_from(data_options)
    event_data = st.sampled_from([None, None, None, *data_options])
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
            choices = choices or (UNKNOWN_TRIGGER,)
            # Hypothesis favours small choices: turning the list each time still visits all
            event = choices[(choice + self._turn) % len(choices)]
            self._turn += 1
            self.fire_event(model.id, event, payload_, merge)

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
