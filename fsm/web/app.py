"""`create_app`: the one ASGI application behind `fsm serve` (pages, API, SSE, metrics)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from fsm.engine import Engine
from fsm.web import api, docs, errors, views, writes
from fsm.web.reader import Reader, check_schema
from fsm.web.tokens import Token
from fsm.worker import BackendLike, Worker

STATIC = Path(__file__).with_name("static")


@dataclass
class ServeSettings:
    url: str
    allow_writes: bool = False
    tokens: list[Token] = field(default_factory=list)
    # the backends commands go through (`--config`); None: no config, commands are refused,
    # since recording `stop` without telling the backend would leave its job running
    backends: list[BackendLike] | None = None
    use_dot: bool = True


def create_app(settings: ServeSettings, engine: Engine | None = None) -> FastAPI:
    """The application over `settings.url`, refused (`SchemaNotNewest`) unless the schema is
    the newest. Reads use a read-only store; a second, writing one exists only with writes."""
    reading = engine or Engine.open_existing(settings.url)
    try:
        check_schema(reading)
    except BaseException:
        reading.close()
        raise

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        close(app)

    app = FastAPI(
        lifespan=lifespan,
        title="fsm",
        summary="Lifecycles of hosts and services: states, histories, definitions, live.",
        version="1",
        docs_url=None,  # FastAPI's Swagger and ReDoc pages load from a CDN: ours is offline
        redoc_url=None,
    )
    app.state.reader = Reader(reading)
    app.state.use_dot = settings.use_dot and shutil.which("dot") is not None
    app.state.writes = None
    if settings.allow_writes:
        writer = Engine(settings.url, migrate=False)
        app.state.writes = writes.WriteSide(
            writer,
            Worker(writer, settings.backends or [], worker_id="api"),
            settings.tokens,
            commands=settings.backends is not None,
        )
    errors.install(app)
    app.include_router(api.router)
    app.include_router(api.metrics_router)
    app.include_router(writes.router)
    app.include_router(docs.router)
    app.include_router(views.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    return app


def close(app: FastAPI) -> None:
    """Close the app's database connections (the reader's and the writer's, if any)."""
    app.state.reader.engine.close()
    if app.state.writes is not None:
        app.state.writes.engine.close()
