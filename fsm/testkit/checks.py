"""After every step: the stored heads and histories against the model, `verify()`, and the
user's own invariants."""

from __future__ import annotations

from typing import ClassVar

from hypothesis.stateful import RuleBasedStateMachine, invariant

from fsm.clock import ManualClock
from fsm.engine import Engine
from fsm.events import Event, Outcome
from fsm.redaction import redact
from fsm.testkit.model import HEAD_FIELDS, Model, fail, has_canary
from fsm.testkit.reference import Kit
from fsm.testkit.resources import KitConfig
from storage import EntityRow, TransitionRow

_MAX_NOTES = 20


class Checks(RuleBasedStateMachine):
    """The comparisons of `LifecycleStateMachine` (which sets these attributes up)."""

    _config: ClassVar[KitConfig]
    engine: Engine
    clock: ManualClock
    entities: list[str]
    _models: dict[str, Model]
    _rows: list[EntityRow]  # the heads as last read back
    _unread: bool  # the engine was called since the database was last read back
    _checked: tuple[Model, ...]  # the models when the database was last read
    _verified: tuple[Model, ...]  # the models when verify() last ran
    _healthy: bool  # no step failed: the final check at teardown makes sense

    _notes: list[str]  # what the current step fired, by event name, for the printed steps

    def _kit(self, model: Model) -> Kit:
        return self._config.kits[model.lifecycle]

    def _note_event(self, model: Model, event: Event) -> int:
        """Remember an event for the step's printed line; returns its place for the outcome."""
        del self._notes[:-_MAX_NOTES]
        self._notes.append(f"{event.entity_id} {event.name} in {model.state}")
        return len(self._notes) - 1

    def _note_outcome(self, note: int, outcome: Outcome) -> None:
        if 0 <= note < len(self._notes):
            error = outcome.error
            result = f"refused: {type(error).__name__}" if error else f"-> {outcome.state}"
            self._notes[note] += f" {result}"

    # -- the checks after every step -------------------------------------------------------

    def _compare_head(self, row: EntityRow, model: Model, what: str) -> None:
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
            names = HEAD_FIELDS
            diff = [
                f"{n}: {s!r} != expected {w!r}"
                for n, s, w in zip(names, seen, want, strict=True)
                if s != w
            ]
            raise fail(f"{what} entity {model.id}: " + "; ".join(diff))

    def _check_history(self, row: EntityRow, history: list[TransitionRow], model: Model) -> None:
        kit = self._kit(model)
        state = kit.lifecycle.initial
        for index, t in enumerate(history, start=1):
            where = f"{row.id} seq {t.seq}"
            if t.seq != index:
                raise fail(f"{row.id}: history seq {t.seq} at position {index} (must be 1..n)")
            if t.from_state != state:
                raise fail(f"{where} leaves {t.from_state}, but replay says {state}")
            if kit.lifecycle.is_terminal(t.from_state):
                raise fail(f"{where} leaves terminal state {t.from_state}")
            if (t.event, t.from_state, t.to_state) not in kit.legal_moves:
                raise fail(f"{where}: {t.event} {t.from_state} -> {t.to_state} is not legal")
            if redact(t.payload) != t.payload or has_canary(t.payload):
                raise fail(f"{where}: payload {t.payload!r} holds an unredacted secret")
            state = t.to_state
        if row.state != state:
            raise fail(f"{row.id} is {row.state}, but replaying its history gives {state}")
        if history != model.history:
            raise fail(f"{row.id}: history {history} differs from expected {model.history}")

    def _touch(self) -> None:
        self._unread = True
        self._healthy = False

    def _read_back(self) -> None:
        """Compare every stored head and history with the model."""
        rows = self.engine.list_entities()
        ids = [r.id for r in rows]
        if sorted(ids) != sorted(self._models):
            raise fail(f"the database holds {sorted(ids)}, expected {sorted(self._models)}")
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
            raise fail("engine.verify() found: " + "; ".join(map(str, violations)))
        self._verified = tuple(self._models.values())

    def _changed_since(self, seen: tuple[Model, ...]) -> bool:
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
                    raise fail(
                        f"invariant {name} failed for {row.id} in {row.state}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
