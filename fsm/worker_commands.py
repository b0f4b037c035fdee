"""Commands: persisted with `schedule`, carried out exactly once by `run_commands`/`command`.

The backend acts first (idempotently, bounded by its `command_timeout`), then the engine records
what it did; a scheduled command is marked done in the same transaction as its transitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from fsm import children as fsm_children
from fsm import validation
from fsm.children import Child
from fsm.errors import FsmError, InvalidEvent
from fsm.events import Event, Outcome
from fsm.secret_refs import resolve_secrets, storable_arguments
from fsm.worker_base import WorkerBase, log
from fsm.worker_settings import call_timeout
from storage import EntityRow, StorageError, queue


class AlreadyDone(FsmError):
    def __init__(self, scheduled_id: int) -> None:
        super().__init__(f"scheduled command #{scheduled_id} was recorded by another worker")


class CommandMixin(WorkerBase):
    def schedule(
        self,
        entity_id: str,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        delay: float = 0.0,
        at: datetime | None = None,
    ) -> int:
        """Persist a command to run once at `at` (or after `delay` seconds); returns its id."""
        engine = self.engine
        entity = engine.get(entity_id)
        self._check_command(entity, command)
        stored = storable_arguments(arguments)  # JSON, and no literal secret: it is persisted
        now = engine.now()
        if at is not None:
            due = validation.aware_time(at, "at")
        else:
            due = now + timedelta(seconds=validation.seconds(delay, "delay"))
        with engine.store.transaction() as uow:
            return queue.schedule_command(uow, entity_id, command, stored, due, now)

    def run_commands(self) -> int:
        """Run due scheduled commands; each is recorded exactly once, even across crashes."""
        engine = self.engine
        now = engine.clock()
        until = now + timedelta(seconds=self.settings.lease_seconds)
        with engine.store.transaction() as uow:
            due = queue.claim_commands(uow, self.id, now, until, self.settings.command_batch)
        done = 0
        for command in due:
            try:
                self.command(
                    command.entity_id,
                    command.command,
                    command.arguments,
                    source="schedule",
                    scheduled_id=command.id,
                )
                done += 1
            except (FsmError, StorageError) as exc:
                log.warning(
                    "scheduled %s #%d on %s: %s",
                    command.command,
                    command.id,
                    command.entity_id,
                    exc,
                )
            except Exception as exc:  # a backend failure: the claim expires and it is retried
                log.warning(
                    "scheduled %s #%d on %s failed, will retry: %s",
                    command.command,
                    command.id,
                    command.entity_id,
                    exc,
                )
        return done

    def command(
        self,
        entity_id: str,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        source: str = "user",
        scheduled_id: int | None = None,
    ) -> list[Outcome]:
        """Carry out a command: the backend acts (idempotently), then the engine records it.

        A command the lifecycle does not allow now is refused before the backend is called.
        With `scheduled_id`, marking the command done commits with its transitions: if another
        worker recorded it first, nothing is written (exactly once).
        """
        engine = self.engine
        arguments = validation.json_mapping({} if arguments is None else arguments, "arguments")
        entity = engine.get(entity_id)
        lifecycle = engine.lifecycle(entity.lifecycle)
        is_event = self._check_command(entity, command)
        if is_event and lifecycle.candidates(entity.state, command) is None:
            error = InvalidEvent(
                entity.id, entity.lifecycle, entity.state, command, lifecycle.allowed[entity.state]
            )
            if scheduled_id is not None:
                self._finish_scheduled(scheduled_id, f"refused: {error}")
            raise error
        backend = self.routes.get(entity.lifecycle)
        now = engine.clock()
        data: Mapping[str, Any] | None = None
        events: tuple[str, ...] = (command,)
        payload: Mapping[str, Any] = arguments
        children: tuple[Child, ...] = ()
        if backend is not None:
            # secret references resolve only here, in memory; the payload keeps the reference
            result = self.calls.call(
                backend,
                "command",
                backend.name,
                call_timeout(backend, "command"),
                backend.execute,
                entity,
                command,
                resolve_secrets(arguments),
                now,
            )
            data = result.data
            events = result.events if result.events is not None else events
            payload = {**arguments, **(result.payload or {})}
            children = fsm_children.of(result)
        with engine.store.transaction() as uow:
            fsm_children.create(engine, uow, children)  # with the command's transition
            batch = engine.stage(uow, uow.lock_entities([entity_id]))
            if not events and data:
                batch.merge_data(entity_id, data)
            outcomes = [
                batch.add(
                    Event(entity_id, name, payload, source, now, data=data if i == 0 else None)
                )
                for i, name in enumerate(events)
            ]
            refused = [o.error for o in outcomes if o.error is not None]
            if children and refused:
                raise refused[0]  # no child without the transition that brought it in
            batch.flush()
            self._request_releases(uow, batch.transitions, now)
            if scheduled_id is not None:
                text = "; ".join(f"{o.event.name}: {o.error or o.state}" for o in outcomes)
                if not queue.complete_command(uow, scheduled_id, self.id, now, text):
                    raise AlreadyDone(scheduled_id)
        engine.committed(batch)
        for outcome in outcomes:
            if outcome.error is not None:
                raise outcome.error
        fsm_children.start(self, engine, children, source)  # e.g. send the operation
        return outcomes

    def _check_command(self, entity: EntityRow, command: str) -> bool:
        """True for a lifecycle event; False for a backend's own command (e.g. `submit`, whose
        result events the backend chooses); anything else is refused."""
        validation.text(command, "command")
        if command in self.engine.lifecycle(entity.lifecycle).definition.triggers:
            return True
        backend = self.routes.get(entity.lifecycle)
        if backend is not None and command in backend.commands:
            return False
        raise FsmError(
            f"{command!r} is neither an event of lifecycle {entity.lifecycle!r} nor a command "
            f"of its backend"
        )

    def _finish_scheduled(self, scheduled_id: int, outcome: str) -> None:
        with self.engine.store.transaction() as uow:
            queue.complete_command(uow, scheduled_id, self.id, self.engine.clock(), outcome)
