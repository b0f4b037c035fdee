"""What the writing commands share: JSON arguments, times, and an engine with the run config.

`fsm create`, `fsm command`, `fsm stop` and `fsm cancel` load the same run config as `fsm run`
(`--config`, or `$FSM_CONFIG`): its database, its extra lifecycles with their guards, and its
backends (profiles), so a command from the shell goes through exactly what a worker would do.
Every argument is checked before the database is opened; only `fsm create` may create one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from fsm.cli_support import UsageProblem, checked_url
from fsm.config import RunConfig, config_lifecycles, load_config
from fsm.documents import DocumentError, read_document
from fsm.engine import Engine
from fsm.errors import FsmError
from fsm.routing import Routes, routes_for
from fsm.worker import Worker

MAX_ARGUMENT_BYTES = 1 << 20

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="FSM_CONFIG",
        help="the run config fsm run uses: db, lifecycles, guards, backends (profiles)",
        show_default=False,
    ),
]


def json_object(value: str | None, option: str) -> dict[str, Any] | None:
    """`--data '{"a": 1}'` or `--data @file.json` (JSON or YAML): a mapping, or exit 2."""
    if value is None:
        return None
    if value.startswith("@"):
        try:
            raw = read_document(Path(value[1:]))
        except DocumentError as exc:
            raise UsageProblem(f"{option}: {exc}") from exc
    else:
        if len(value.encode("utf-8", "surrogatepass")) > MAX_ARGUMENT_BYTES:
            raise UsageProblem(f"{option} is larger than 1 MiB; use {option} @FILE")
        try:
            raw = json.loads(value)
        except (json.JSONDecodeError, RecursionError) as exc:
            where = f" at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
            raise UsageProblem(
                f"{option} is not valid JSON{where} (or use {option} @FILE)"
            ) from None
    if not isinstance(raw, dict):
        raise UsageProblem(f"{option} must be a JSON object, got {type(raw).__name__}")
    return raw


def due_time(at: str | None, after: float | None) -> datetime | None:
    """`--at 2026-12-02T10:00:00Z` (a timezone is required) or `--in SECONDS`; None: now."""
    if at is not None and after is not None:
        raise UsageProblem("--at and --in exclude each other")
    if at is None:
        return None if after is None else datetime.now(UTC) + timedelta(seconds=after)
    text = at.strip()
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise UsageProblem(
            "--at must be an ISO 8601 time with a timezone, e.g. 2026-12-02T10:00:00Z"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise UsageProblem("--at needs a timezone (e.g. a trailing Z for UTC)")
    return when.astimezone(UTC)


@dataclass
class Session:
    """An engine on the config's database with the config's lifecycles, and (when a command
    needs one) a worker with the config's backends."""

    engine: Engine
    config: RunConfig
    _routes: Routes | None = None
    _worker: Worker | None = None
    closing: list[Any] = field(default_factory=list)

    @property
    def routes(self) -> Routes:
        if self._routes is None:
            self._routes = routes_for(self.config)
            self.closing.extend(self._routes.instances())
        return self._routes

    @property
    def worker(self) -> Worker:
        if self._worker is None:
            self._worker = Worker(
                self.engine, self.routes.for_worker(), worker_id=f"cli:{os.getpid()}"
            )
        return self._worker

    def check_profile(self, profile: str | None, lifecycle: str) -> None:
        """A profile the config names, whose backend drives `lifecycle`."""
        if profile is None:
            return
        if profile not in self.routes:
            known = ", ".join(sorted(self.routes)) or "none (give backends a name: to use one)"
            raise UsageProblem(
                f"--backend {profile[:100]!r} is not a profile of the config: {known}"
            )
        drives = self.routes[profile].lifecycles
        if lifecycle not in drives:
            raise UsageProblem(
                f"--backend {profile!r} drives {', '.join(sorted(drives))}, not {lifecycle!r}"
            )


@contextmanager
def session(db: str | None, config: Path | None, *, create: bool = False) -> Iterator[Session]:
    """Config, URL and lifecycles checked first; the database must exist unless `create`."""
    settings = load_config(config)
    url = checked_url(db or settings.db)
    lifecycles = config_lifecycles(settings)
    if not create:
        Engine.open_existing(url).close()  # a missing database is reported, not made
    engine = Engine(url)
    current = Session(engine, settings)
    try:
        for lifecycle in lifecycles:
            engine.register(lifecycle)
        yield current
    finally:
        for backend in current.closing:
            try:
                close = getattr(backend, "close", None)
                if close is not None:
                    close()
            except Exception as exc:  # closing must not hide what the command did
                raise FsmError(f"closing backend {getattr(backend, 'name', '?')}: {exc}") from exc
        engine.close()
