"""One event, predicted and judged: what the `transitions` library says must happen, and
whether the engine's outcome (and the head it reports) agrees."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from fsm.context import EventContext
from fsm.errors import CallbackError, InvalidEvent
from fsm.events import Event, Outcome
from fsm.redaction import redact
from fsm.testkit.checks import Checks
from fsm.testkit.model import Guess, Model, expected_deadline, fail
from fsm.testkit.reference import GuardRaised
from storage import EntityNotFound, TransitionRow, VersionConflict


class Judging(Checks):
    """Predicts each event's effect on the model and compares the engine's outcome with it."""

    def _guess(self, model: Model, event: Event, now: datetime) -> Guess:
        """What the engine must do with `event`, decided by the `transitions` library."""
        if event.expected_version is not None and event.expected_version != model.version:
            return Guess("conflict")
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
        except GuardRaised as raised:
            return Guess("hook", hook=raised.name, hook_error=type(raised.cause))
        if dest is None:
            return Guess("invalid")
        if model.terminal:
            raise fail(
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
                return Guess("kept", model)
            return Guess("kept", replace(model, data=data, version=model.version + 1))
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
            deadline_at=expected_deadline(lifecycle, dest, entered, data),
            data=data,
            definition_version=lifecycle.version,
            history=[*model.history, step],
        )
        return Guess("moved", after)

    def _judge(self, model: Model, event: Event, guess: Guess, outcome: Outcome) -> Model:
        """Compare one outcome with the guess; return the model the entity has now."""
        error = outcome.error
        where = f"{event.name!r} on {event.entity_id!r}"
        if guess.kind != "moved" and guess.kind != "kept":
            self._judge_refusal(model, event, guess, outcome)
            return model
        if isinstance(error, CallbackError) and guess.kind == "moved":
            names = self._kit(model).callbacks.get((model.state, event.name), frozenset())
            if error.name not in names:
                raise fail(f"{where}: CallbackError from {error.name!r}, not a callback here")
            if not self._config.callbacks_may_raise:
                raise fail(f"{where}: callback raised: {error}") from error
            self._same_head(model, outcome, where)
            return model
        if error is not None:
            raise fail(
                f"{where}: the transitions machine {guess.kind} the entity "
                f"({model.state} -> {guess.after.state if guess.after else '?'}), "
                f"but the engine raised {type(error).__name__}: {error}"
            )
        after = guess.after
        assert after is not None
        if outcome.state != after.state or outcome.version != after.version:
            raise fail(
                f"{where} in {model.state} (version {model.version}): engine chose "
                f"{outcome.state} (version {outcome.version}), the transitions machine "
                f"{after.state} (version {after.version})"
            )
        expected_row = after.history[-1] if guess.kind == "moved" else None
        if outcome.transition != expected_row:
            raise fail(f"{where}: recorded {outcome.transition}, expected {expected_row}")
        return after

    def _judge_refusal(self, model: Model, event: Event, guess: Guess, outcome: Outcome) -> None:
        error = outcome.error
        where = f"{event.name!r} on {model.id!r} in {model.state}"
        if guess.kind == "conflict":
            if not isinstance(error, VersionConflict) or (error.expected, error.actual) != (
                event.expected_version,
                model.version,
            ):
                raise fail(
                    f"{where}: expected VersionConflict({event.expected_version} vs "
                    f"{model.version}), got {error!r}"
                )
        elif guess.kind == "invalid":
            allowed = self._kit(model).allowed[model.state]
            if not isinstance(error, InvalidEvent):
                raise fail(f"{where}: not allowed by the transitions machine, got {outcome}")
            if (error.state, error.event, set(error.allowed)) != (
                model.state,
                event.name,
                set(allowed),
            ):
                raise fail(
                    f"{where}: InvalidEvent names state {error.state}, event {error.event}, "
                    f"allowed {sorted(error.allowed)}; expected allowed {sorted(allowed)}"
                )
            if model.terminal and error.allowed:
                raise fail(f"{where}: terminal state allows {error.allowed}")
        elif guess.kind == "hook":
            if not isinstance(error, CallbackError) or error.name != guess.hook:
                raise fail(
                    f"{where}: guard {guess.hook!r} raised, expected CallbackError: {error!r}"
                )
            if type(error.cause) is not guess.hook_error:
                raise fail(f"{where}: CallbackError.cause is {error.cause!r}")
        self._same_head(model, outcome, where)

    @staticmethod
    def _same_head(model: Model, outcome: Outcome, where: str) -> None:
        if outcome.transition is not None or (outcome.state, outcome.version) != (
            model.state,
            model.version,
        ):
            raise fail(
                f"{where}: a refused event reported state {outcome.state} version "
                f"{outcome.version} transition {outcome.transition}; the entity was "
                f"{model.state} version {model.version}"
            )

    def _fire(self, model: Model, event: Event) -> Model:
        """Fire one event with `Engine.fire`, which raises instead of returning errors."""
        now = self.clock.now
        guess = self._guess(model, event, now)
        self._touch()
        note = self._note_event(model, event)
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
                raise fail(f"{event.name!r} on {model.id!r}: expected {guess.kind}, got {outcome}")
        self._note_outcome(note, outcome)
        after = self._judge(model, event, guess, outcome)
        self._models[model.id] = after
        return after
