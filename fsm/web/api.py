"""The read side of the HTTP API (JSON, documented by the OpenAPI at /openapi.json)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from fsm.web import models, stream
from fsm.web.prometheus import exposition
from fsm.web.reader import Reader
from storage.pages import SORTS, EntityQuery, Sort, has_profiles

router = APIRouter(prefix="/api", tags=["read"])
Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: {"model": models.Problem, "description": "no such entity"}}
BAD: Responses = {400: {"model": models.Problem, "description": "a bad filter, cursor or window"}}
Text = Annotated[str | None, Query(max_length=200)]


def reader(request: Request) -> Reader:
    found: Reader = request.app.state.reader
    return found


ReaderDep = Annotated[Reader, Depends(reader)]


def clean(value: str | None, name: str) -> str | None:
    """Empty means unset; a NUL can name nothing stored (and PostgreSQL refuses it)."""
    if value is None or value == "":
        return None
    if "\x00" in value:
        raise HTTPException(400, f"{name} must not contain NUL characters")
    return value


def entity_query(
    lifecycle: Text = None,
    state: Text = None,
    profile: Text = None,
    parent: Text = None,
    q: Annotated[str | None, Query(max_length=200, description="text in the id or data")] = None,
    sort: Annotated[Sort, Query(description=f"one of {', '.join(SORTS)}")] = "id",
    desc: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[str | None, Query(max_length=1000, description="next_cursor")] = None,
) -> EntityQuery:
    if clean(profile, "profile") is not None and not has_profiles():
        raise HTTPException(400, "this database's schema has no profiles yet")
    return EntityQuery(
        lifecycle=clean(lifecycle, "lifecycle"),
        state=clean(state, "state"),
        profile=clean(profile, "profile"),
        parent_id=clean(parent, "parent"),
        text=clean(q, "q"),
        sort=sort,
        descending=desc,
        limit=limit,
        after=clean(after, "after"),
    )


QueryDep = Annotated[EntityQuery, Depends(entity_query)]


def stream_query(
    lifecycle: Text = None,
    state: Annotated[str | None, Query(max_length=200, description="the state moved to")] = None,
    profile: Text = None,
    parent: Text = None,
    entity: Text = None,
    q: Annotated[str | None, Query(max_length=200, description="text in the id or data")] = None,
) -> EntityQuery:
    filters = entity_query(lifecycle, state, profile, parent, q)
    return replace(filters, entity_id=clean(entity, "entity"))


StreamQueryDep = Annotated[EntityQuery, Depends(stream_query)]


def entity_id_of(entity_id: str) -> str:
    found = clean(entity_id, "entity id")
    if found is None or len(found) > 200:
        raise HTTPException(404, "no such entity")
    return found


@router.get("/lifecycles", response_model=list[models.LifecycleInfo])
def lifecycles(r: ReaderDep) -> list[models.LifecycleInfo]:
    """Every lifecycle: its current definition and the versions stored in the database."""
    return r.lifecycle_infos()


@router.get(
    "/lifecycles/{name}/versions/{version}",
    response_model=models.Definition,
    responses={404: {"model": models.Problem}},
)
def definition(name: str, version: str, r: ReaderDep) -> models.Definition:
    """One definition version, as stored (what `verify` replays old transitions against)."""
    found = r.definition(name, version)
    if found is None:
        raise HTTPException(404, "no such definition version")
    return found


@router.get("/overview", response_model=models.Overview, responses=BAD)
def overview(
    r: ReaderDep,
    window: Annotated[
        str, Query(max_length=20, description="hour, day, week, all, or 90m")
    ] = "day",
) -> models.Overview:
    """Counts per state, moves fired in the window, what needs attention, leases by worker."""
    return r.overview(window)


@router.get("/entities", response_model=models.EntityPage, responses=BAD)
def entities(r: ReaderDep, query: QueryDep) -> models.EntityPage:
    """One keyset page of entities; pass `next_cursor` as `after` for the next."""
    return r.entities(query)


@router.get(
    "/entities/{entity_id:path}/history", response_model=models.History, responses=NOT_FOUND
)
def history(entity_id: str, r: ReaderDep) -> models.History:
    """The entity and every transition it went through, in order."""
    return r.history(entity_id_of(entity_id))


@router.get(
    "/entities/{entity_id:path}/verify", response_model=models.Verification, responses=NOT_FOUND
)
def verify(entity_id: str, r: ReaderDep) -> models.Verification:
    """Replay this entity's history through the definition versions it names."""
    return r.verify(entity_id_of(entity_id))


@router.get("/entities/{entity_id:path}", response_model=models.EntityDetail, responses=NOT_FOUND)
def entity(entity_id: str, r: ReaderDep) -> models.EntityDetail:
    """The entity with its parent, children, pending scheduled commands and verification."""
    return r.entity(entity_id_of(entity_id))


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE"}, **BAD},
)
async def transitions(
    request: Request,
    r: ReaderDep,
    query: StreamQueryDep,
    since: Annotated[float, Query(ge=0, le=86400, description="also the last N seconds")] = 0,
    seconds: Annotated[float | None, Query(gt=0, le=86400, description="end after N s")] = None,
) -> StreamingResponse:
    """Server-Sent Events: one `transition` event per transition recorded from now on, for
    entities matching the same filters as /api/entities (state: the state moved to)."""
    resume = stream.parse_mark(request.headers.get("last-event-id"))
    start = resume or r.start_mark(timedelta(seconds=since))
    body = stream.transitions(r, query, start, request.is_disconnected, until=seconds)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


@router.get("/health", tags=["read"])
def health() -> dict[str, str]:
    return {"status": "ok"}


metrics_router = APIRouter(tags=["read"])


@metrics_router.get("/metrics", response_class=PlainTextResponse)
def metrics(r: ReaderDep) -> PlainTextResponse:
    """Prometheus text format: entities per state, recent moves, attention counts, leases."""
    return PlainTextResponse(exposition(r), media_type="text/plain; version=0.0.4")
