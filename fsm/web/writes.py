"""The write side of the HTTP API: create, command, schedule, cancel.

Mounted always, so that the OpenAPI shows it, but answering only when `fsm serve` was started
with `--allow-writes` (else 403) and the request carries a known bearer token (else 401).
Every write goes through the engine and worker calls the CLI and library use (validated,
atomic), and a command's transitions record `api:<token name>` as their source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fsm.engine import Engine
from fsm.web import models
from fsm.web.api import entity_id_of
from fsm.web.tokens import Token, match
from fsm.worker import Worker
from storage.command_admin import CANCELLED, cancel_command, get_command
from storage.pages import scheduled_command

router = APIRouter(prefix="/api", tags=["write"])
bearer = HTTPBearer(auto_error=False, description="NAME:TOKEN entries from $FSM_API_TOKENS")
REFUSED: dict[int | str, dict[str, Any]] = {
    401: {"model": models.Problem, "description": "no bearer token, or an unknown one"},
    403: {"model": models.Problem, "description": "the server was started read-only"},
    404: {"model": models.Problem},
    409: {"model": models.Problem, "description": "not allowed in the entity's state now"},
    400: {"model": models.Problem},
}


@dataclass
class WriteSide:
    engine: Engine
    worker: Worker
    tokens: list[Token]
    commands: bool = True  # False without --config: no backend would carry a command out


def writer(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> tuple[WriteSide, str]:
    """The write side and the source to record, or 403/401."""
    side: WriteSide | None = request.app.state.writes
    if side is None:
        raise HTTPException(403, "writes are disabled: start fsm serve with --allow-writes")
    token = match(side.tokens, credentials.credentials) if credentials is not None else None
    if token is None:
        raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
    return side, f"api:{token.name}"


WriterDep = Annotated[tuple[WriteSide, str], Depends(writer)]


@router.post("/entities", response_model=models.Entity, status_code=201, responses=REFUSED)
async def create(body: models.CreateBody, w: WriterDep) -> models.Entity:
    """Create an entity in its lifecycle's initial state."""
    side, _source = w

    def run() -> models.Entity:
        row = side.engine.create(
            body.lifecycle, body.data, id=body.id, parent_id=body.parent_id, profile=body.profile
        )
        return models.Entity.of(row)

    return await anyio.to_thread.run_sync(run)


@router.post(
    "/entities/{entity_id:path}/commands", response_model=models.Outcome, responses=REFUSED
)
async def command(entity_id: str, body: models.CommandBody, w: WriterDep) -> models.Outcome:
    """Carry out a command now (a lifecycle event, or a command of the configured backend)."""
    side, source = w
    target = entity_id_of(entity_id)
    if not side.commands:
        raise HTTPException(
            400,
            "this server runs commands only with --config naming the backends that carry them "
            "out; schedule it instead (a worker runs it through its backend)",
        )

    def run() -> models.Outcome:
        before = side.engine.get(target).seq
        side.worker.command(target, body.command, body.arguments, source=source)
        history = side.engine.store.history(target)
        return models.Outcome(
            entity=models.Entity.of(side.engine.get(target)),
            transitions=[models.Transition.of(t) for t in history if t.seq > before],
        )

    return await anyio.to_thread.run_sync(run)


@router.post(
    "/entities/{entity_id:path}/schedule", response_model=models.Scheduled, responses=REFUSED
)
async def schedule(entity_id: str, body: models.ScheduleBody, w: WriterDep) -> models.Scheduled:
    """Persist a command for a worker to run once after `delay` seconds."""
    side, _source = w
    target = entity_id_of(entity_id)

    def run() -> models.Scheduled:
        number = side.worker.schedule(target, body.command, body.arguments, delay=body.delay)
        with side.engine.store.reading() as conn:
            row = scheduled_command(conn, number)
        assert row is not None  # committed by `schedule` above; never deleted
        return models.Scheduled(id=number, entity_id=target, due_at=row.due_at)

    return await anyio.to_thread.run_sync(run)


@router.delete(
    "/entities/{entity_id:path}/schedule/{command_id}",
    response_model=models.Cancelled,
    responses=REFUSED,
)
async def cancel(entity_id: str, command_id: int, w: WriterDep) -> models.Cancelled:
    """Cancel a scheduled command that no worker has run or claimed (409 otherwise)."""
    side, source = w
    target = entity_id_of(entity_id)

    def run() -> bool:
        side.engine.get(target)  # EntityNotFound: 404
        with side.engine.store.transaction() as uow:
            row = get_command(uow, command_id)
            if row is None or row.entity_id != target:
                return False
            won, _now = cancel_command(
                uow, command_id, side.engine.now(), f"{CANCELLED} by {source}"
            )
            return won

    if not await anyio.to_thread.run_sync(run):
        raise HTTPException(409, "no pending, unclaimed command with that id for this entity")
    return models.Cancelled(id=command_id, cancelled=True)
