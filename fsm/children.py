"""Entities a command brings into being with its own transition (a host command's operation).

A backend's `CommandResult.children` names them: each a `NewEntity` (with its `parent_id`)
and, optionally, the command to run on it once both are committed (an operation's `start`,
which sends the cloud request). The worker creates the children with `Engine.create_in` in
the transaction that records the command's transition — both commit, or neither — and then
runs their commands; a child whose command fails is recorded `fail`ed, and a failed operation
moves its host at once (fsm.cascade). So a host command can be scheduled like any other, and
everything it did is in the history: the host's transition names its operation, the
operation's its parent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from fsm.engine import Engine
from fsm.events import NewEntity
from storage import EntityRow
from storage.store import UnitOfWork

log = logging.getLogger(__name__)


class Child(NamedTuple):
    """A new entity of a command result, and the command to run on it after the commit."""

    entity: NewEntity
    command: str | None = None
    arguments: Mapping[str, Any] | None = None


class _Commands(Protocol):
    def command(
        self,
        entity_id: str,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        source: str = "user",
    ) -> Any: ...


def of(result: object) -> tuple[Child, ...]:
    """The children a command result names (none for a backend that never makes any)."""
    found = getattr(result, "children", None) or ()
    if not all(isinstance(c, Child) for c in found):
        raise TypeError("CommandResult.children must be fsm.children.Child values")
    return tuple(found)


def create(engine: Engine, uow: UnitOfWork, children: Sequence[Child]) -> list[EntityRow]:
    """Create them in the caller's transaction (the one recording the command)."""
    return engine.create_in(uow, [c.entity for c in children]) if children else []


def start(worker: _Commands, engine: Engine, children: Sequence[Child], source: str) -> None:
    """Run each child's command now that it exists; one that fails is recorded as failed."""
    for child in children:
        entity_id = child.entity.id
        if child.command is None or entity_id is None:
            continue
        try:
            worker.command(entity_id, child.command, child.arguments, source=source)
        except Exception as exc:  # nothing reached the backend, or it refused: say so
            reason = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("%s of %s failed: %s", child.command, entity_id, reason)
            try:
                engine.fire(entity_id, "fail", {"error": reason}, data={"error": reason})
            except Exception as again:  # its lifecycle has no `fail` here: leave it to time
                log.warning("could not record the failure of %s: %s", entity_id, again)
