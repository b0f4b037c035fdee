"""Shared by the web tests: a database with known contents, and `fsm serve`'s app served by
uvicorn in a thread (a real HTTP server on a free port, for the browser and SSE)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from fsm import Engine
from fsm.web.app import ServeSettings, create_app
from fsm.web.background import BackgroundServer
from fsm.web.tokens import Token

SECRET = "hunter2-very-secret-value"
TOKEN = Token("ci", b"t0ken-for-the-tests-0123456789")


@dataclass
class Built:
    """What `build` wrote: the truth the pages and the API must show."""

    counts: dict[tuple[str, str], int]
    ids: list[str]


def build(url: str, services: int = 12, hosts: int = 5) -> Built:
    """Services in several states (with a secret in their data and payloads) and hosts."""
    engine = Engine(url)
    try:
        ids = []
        for i in range(services):
            entity = engine.create(
                "service",
                {"name": f"svc {i}", "team": "red" if i % 3 == 0 else "blue", "password": SECRET},
                id=f"svc-{i:03d}",
            )
            ids.append(entity.id)
            if i % 4 != 0:
                engine.fire(entity.id, "job_pending", {"api_key": SECRET})
            if i % 4 in (2, 3):
                engine.fire(entity.id, "job_running", {"node": f"n{i}"})
            if i % 4 == 3:
                engine.fire(entity.id, "ping_ok", {})
        for i in range(hosts):
            ids.append(engine.create("host", {"name": f"host {i}"}, id=f"host-{i}").id)
        counts = {(c.lifecycle, c.state): c.total for c in engine.counts()}
        return Built(counts, ids)
    finally:
        engine.close()


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 in a thread; yields its base URL."""
    server = BackgroundServer(app).start()
    try:
        yield server.address
    finally:
        server.stop()


def app_for(
    url: str, *, writes: bool = False, use_dot: bool = True, commands: bool = True
) -> FastAPI:
    """`commands`: as if `--config` named backends that drive none of the built-in lifecycles
    (the engine then records a command's event itself, as `fsm run` would)."""
    return create_app(
        ServeSettings(
            url,
            allow_writes=writes,
            tokens=[TOKEN] if writes else [],
            backends=[] if commands else None,
            use_dot=use_dot,
        )
    )
