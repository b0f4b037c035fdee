"""A scripted tour of the engine on a throw-away database, for `fsm demo`.

It drives a few services, hosts and operations through their lifecycles with a `ManualClock`, so
time limits expire instantly and every run writes the same history. It lives apart from the CLI
because a later version will drive real local processes instead; the CLI only needs `run`.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from fsm.clock import ManualClock
from fsm.engine import Engine
from fsm.errors import FsmError, InvalidEvent
from storage.database import sqlite_path

DEFAULT_URL = "sqlite:///fsm-demo.db"
PREFIX = "demo-"
STEP_SECONDS = 5.0

Narrate = Callable[[str], None]


class DemoRefused(FsmError):
    """The demo will not wipe a database that holds more than its own entities."""


@dataclass(slots=True)
class DemoReport:
    """What the walk did; the CLI prints the database's state from `url` itself."""

    url: str
    featured: str  # the entity whose full history is worth showing
    refused: list[str] = field(default_factory=list)
    events: int = 0


def _foreign_entities(path: Path) -> str | None:
    """Why `path` must not be deleted, or None when it holds only demo entities (or nothing)."""
    if path.is_dir():
        return "it is a directory"
    if path.stat().st_size == 0:
        return None
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as conn:
            (others,) = conn.execute(
                "SELECT count(*) FROM entity WHERE id NOT LIKE ?", (f"{PREFIX}%",)
            ).fetchone()
    except sqlite3.DatabaseError as exc:
        return f"it is not a demo database ({exc})"
    return f"it holds {others} entities the demo did not create" if others else None


def reset(url: str) -> bool:
    """Delete a previous demo's SQLite file; True if the database now starts empty."""
    path = sqlite_path(url)
    if path is None:
        return make_url(url).database in ("", ":memory:")
    if path.exists():
        reason = _foreign_entities(path)
        if reason is not None:
            raise DemoRefused(f"refusing to delete {path}: {reason}")
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return True


class _Walk:
    """Fires events one clock step apart and narrates what each one did."""

    def __init__(self, engine: Engine, clock: ManualClock, say: Narrate, suffix: str) -> None:
        self.engine = engine
        self.clock = clock
        self.say = say
        self.suffix = suffix
        self.report = DemoReport(url=engine.store.url, featured="")

    def id(self, name: str) -> str:
        return f"{PREFIX}{name}{self.suffix}"

    def create(
        self, lifecycle: str, name: str, data: Mapping[str, Any], parent: str | None = None
    ) -> str:
        parent_id = self.id(parent) if parent else None
        row = self.engine.create(lifecycle, data, id=self.id(name), parent_id=parent_id)
        self.say(f"created {lifecycle} {row.id} in {row.state}")
        return row.id

    def fire(self, entity_id: str, *events: str, source: str = "demo") -> None:
        for event in events:
            self.clock.advance(STEP_SECONDS)
            outcome = self.engine.fire(entity_id, event, source=source)
            self.report.events += 1
            t = outcome.transition
            moved = f"{t.from_state} -> {t.to_state}" if t else f"stays {outcome.state}"
            self.say(f"  {entity_id}: {event}: {moved}")

    def refuse(self, entity_id: str, event: str) -> None:
        """Fire an event the lifecycle does not allow; the engine must refuse it."""
        self.clock.advance(STEP_SECONDS)
        try:
            self.engine.fire(entity_id, event, source="demo")
        except InvalidEvent as exc:
            self.report.refused.append(str(exc))
            self.say(f"  refused as expected: {exc}")
            return
        raise FsmError(f"the engine accepted {event!r} on {entity_id}, which it must refuse")


def _services(w: _Walk) -> None:
    web = w.create("service", "svc-web", {"job": "web-1001"})
    api = w.create("service", "svc-api", {"job": "api-1002"})
    slow = w.create("service", "svc-slow", {"job": "slow-1003"})
    batch = w.create("service", "svc-batch", {"job": "batch-1004"})
    queued = w.create("service", "svc-queued", {"job": "queued-1005"})
    w.fire(web, "job_pending", "job_running", "ping_ok", "ping_ok")
    w.refuse(queued, "ping_failed")  # a health ping for a service whose job is not even queued
    w.fire(queued, "job_pending")
    w.say("a flapping service: healthy, unhealthy, healthy, ... then stopped")
    w.fire(api, "job_pending", "job_running", "ping_ok")
    w.fire(api, "ping_failed", "ping_ok", "ping_failed", "ping_failed", "ping_ok")
    w.fire(api, "stop")
    w.refuse(api, "ping_ok")  # STOPPED is terminal: nothing leaves it
    w.say("a service that never becomes healthy: STARTING's 10 minute limit runs out")
    w.fire(slow, "job_pending", "job_running", "ping_failed")
    w.clock.advance(601)
    w.fire(slow, "ping_failed")  # the guard time_limit_exceeded now holds
    w.fire(batch, "job_pending", "job_running", "job_failed")
    w.report.featured = api


def _hosts_and_operations(w: _Walk) -> None:
    h1 = w.create("host", "host-1", {"size": "small"})
    h2 = w.create("host", "host-2", {"size": "large"})
    w.fire(h1, "provision", "running", "restart", "running")
    deploy = w.create("operation", "op-deploy", {"what": "deploy web"}, parent="host-1")
    w.fire(deploy, "start", "progress", "succeed")
    stuck = w.create("operation", "op-stuck", {"what": "resize disk"}, parent="host-1")
    w.clock.advance(300)
    w.fire(stuck, "time_limit", source="timer")  # as the timeout tick would, once PENDING expired
    w.fire(h2, "provision")
    resize = w.create("operation", "op-resize", {"what": "attach gpu"}, parent="host-2")
    w.fire(resize, "start", "fail")
    w.fire(h2, "failed", "deprovision", "deleted")


def run(url: str, say: Narrate) -> DemoReport:
    """Reset the demo database at `url`, walk the script, and report; raises on any surprise."""
    fresh = reset(url)
    suffix = "" if fresh else f"-{uuid.uuid4().hex[:6]}"  # never collide on a shared server
    clock = ManualClock()
    engine = Engine(url, clock=clock)
    try:
        walk = _Walk(engine, clock, say, suffix)
        _services(walk)
        _hosts_and_operations(walk)
        return walk.report
    finally:
        engine.close()
