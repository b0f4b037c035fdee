"""`fsm demo`: real local services driven by the real loop, watched live (about 30 s).

Four small HTTP services (shipped in `backends.local.demo_service`) run as local processes:
one becomes healthy and is stopped by a scheduled command, one crashes, one never answers its
health check and times out, one flaps between HEALTHY and UNHEALTHY until it is stopped. The
worker loop (APScheduler, the same `Runner` as `fsm run`) observes them; every change is a
persisted transition.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fsm.config import make_backend
from fsm.demo import reset
from fsm.diagram import render
from fsm.engine import Engine
from fsm.logs import configure
from fsm.runner import Runner
from fsm.worker import Worker, WorkerSettings
from storage import TransitionRow
from storage.database import sqlite_path

log = logging.getLogger(__name__)

STATE_STYLE = {
    "SUBMITTED": "white",
    "PENDING": "cyan",
    "STARTING": "yellow",
    "HEALTHY": "bold green",
    "UNHEALTHY": "bold yellow",
    "FAILED": "bold red",
    "TIMEOUT": "red",
    "STOPPED": "blue",
}


@dataclass(frozen=True)
class DemoService:
    name: str
    mode: str
    story: str
    starting_limit: float
    stop_after: float | None = None
    extra: tuple[str, ...] = ()


SERVICES = (
    DemoService("web", "healthy", "healthy, stopped by a scheduled command at 14 s", 20, 14),
    DemoService("worker", "crash", "crashes after 9 s", 20, None, ("--crash-after", "9")),
    DemoService("silent", "silent", "never answers: STARTING times out at 10 s", 10),
    DemoService(
        "flappy",
        "flappy",
        "flaps HEALTHY/UNHEALTHY, stopped at 26 s",
        20,
        26,
        ("--flap-every", "3"),
    ),
)


@dataclass
class LiveReport:
    url: str
    featured: str
    seconds: float
    diagram_files: list[Path] = field(default_factory=list)
    no_svg: str | None = None  # why there is no SVG diagram (Graphviz's `dot` is optional)
    ids: dict[str, str] = field(default_factory=dict)


class _View:
    """What the live display shows: one row per service and the latest transitions."""

    def __init__(self, engine: Engine, ids: dict[str, str], started: float) -> None:
        self.engine = engine
        self.ids = ids
        self.started = started
        self.recent: list[TransitionRow] = []
        engine.subscribe(self._remember)

    def _remember(self, transitions: Any) -> None:
        self.recent = (self.recent + list(transitions))[-8:]

    def __rich__(self) -> Group:
        table = Table(title=f"fsm demo — {time.monotonic() - self.started:4.1f} s", expand=False)
        for column in ("service", "story", "state", "pid", "port", "in state", "moves"):
            table.add_column(column)
        now = self.engine.clock()
        story = {s.name: s.story for s in SERVICES}
        for name, entity_id in self.ids.items():
            e = self.engine.get(entity_id)
            table.add_row(
                name,
                story[name],
                Text(e.state, style=STATE_STYLE.get(e.state, "")),
                str(e.data.get("pid", "-")),
                str(e.data.get("port", "-")),
                f"{(now - e.state_entered_at).total_seconds():5.1f} s",
                str(e.seq),
            )
        names = {v: k for k, v in self.ids.items()}
        lines = [
            Text.assemble(
                f"{t.recorded_at:%H:%M:%S}  {names.get(t.entity_id, t.entity_id):<7} "
                f"{t.from_state:>10} → ",
                (t.to_state, STATE_STYLE.get(t.to_state, "")),
                f"  {t.event} ({t.source})",
            )
            for t in self.recent
        ]
        return Group(table, Text("latest transitions:", style="dim"), *lines)


def run(url: str, console: Console, *, seconds: float = 30.0) -> LiveReport:
    """Start the services, run the loop until they all ended (or `seconds` + 10 passed)."""
    configure(level="WARNING")
    reset(url)
    path = sqlite_path(url)
    base = path.resolve().parent if path is not None else Path.cwd()
    engine = Engine(url, refresh_scale=0.2)
    backend = make_backend(
        {"kind": "local", "state_dir": str(base / "fsm-demo-processes"), "grace": 3.0}
    )
    worker = Worker(engine, [backend], settings=WorkerSettings(lease_seconds=10))
    ids: dict[str, str] = {}
    web = _web_view(url, console)
    try:
        for service in SERVICES:
            entity = engine.create(
                "service",
                {"name": service.name, "time_limits": {"STARTING": service.starting_limit}},
                id=f"demo-{service.name}",
            )
            ids[service.name] = entity.id
            argv = [
                sys.executable,
                "-m",
                "backends.local.demo_service",
                "--mode",
                service.mode,
                "--port",
                "{port}",
                "--boot",
                "0.5",
                *service.extra,
            ]
            worker.command(
                entity.id, "submit", {"process": {"argv": argv, "health": {"http": "/health"}}}
            )
            if service.stop_after is not None:
                worker.schedule(entity.id, "stop", delay=service.stop_after)
        started = time.monotonic()
        runner = Runner(worker, interval=0.25, exit_when_idle=True)
        view = _View(engine, ids, started)
        deadline = started + seconds + 10

        def watchdog(_: Any) -> None:
            if time.monotonic() > deadline:
                runner.stop()

        runner.on_tick = watchdog
        if console.is_terminal:
            with Live(view, console=console, refresh_per_second=4, transient=False):
                runner.run()
        else:

            def narrate(transitions: Any) -> None:
                for t in transitions:
                    console.print(_plain(t, ids))

            engine.subscribe(narrate)
            runner.run()
        report = LiveReport(url, ids["flappy"], time.monotonic() - started, ids=ids)
        report.diagram_files, report.no_svg = _annotated_diagrams(engine, base)
        return report
    finally:
        if web is not None:
            web.stop()
        for entity_id in ids.values():  # nothing outlives the demo
            entity = engine.get(entity_id)
            if not entity.terminal:
                worker.command(entity_id, "stop", source="demo")
            else:
                backend.release(entity, engine.clock())
        worker.run_releases()  # the stops above asked for releases: confirm them now
        backend.close()
        engine.close()


def _web_view(url: str, console: Console) -> Any:
    """`fsm serve` on the demo's database while it runs (skipped without the web extra)."""
    try:
        from fsm.web.background import serve_in_background
    except ImportError:
        return None
    try:
        view = serve_in_background(url)
    except OSError as exc:
        log.warning("no web view: %s", exc)
        return None
    console.print(f"web view of this demo, live while it runs: {view.address}/")
    return view


def _plain(t: TransitionRow, ids: dict[str, str]) -> str:
    names = {v: k for k, v in ids.items()}
    return (
        f"{t.recorded_at:%H:%M:%S}  {names.get(t.entity_id, t.entity_id):<7} "
        f"{t.from_state:>10} -> {t.to_state:<10} {t.event} ({t.source})"
    )


def _annotated_diagrams(engine: Engine, folder: Path) -> tuple[list[Path], str | None]:
    """The service lifecycle with how many services ended in each state and how often each
    transition fired in this run; and why there is no SVG, when there is none."""
    counts = Counter({c.state: c.total for c in engine.counts() if c.lifecycle == "service"})
    fired: Counter[tuple[str, str, str]] = Counter()
    for entity in engine.list_entities(lifecycle="service"):
        for t in engine.history(entity.id):
            fired[(t.event, t.from_state, t.to_state)] += 1
    lifecycle = engine.lifecycle("service")
    written = []
    mermaid = folder / "fsm-demo-service.mmd"
    mermaid.write_text(render(lifecycle, "mermaid", counts=counts, fired=fired))
    written.append(mermaid)
    try:
        svg = folder / "fsm-demo-service.svg"
        svg.write_text(render(lifecycle, "svg", counts=counts, fired=fired))
        written.append(svg)
    except Exception as exc:  # Graphviz's `dot` is optional for the demo
        log.info("no SVG diagram: %s", exc)
        return written, str(exc)
    return written, None
