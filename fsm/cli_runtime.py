"""The runtime commands of the CLI: `fsm run` (a worker) and `fsm watch` (live transitions)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fsm.config import load_config
from fsm.engine import Engine
from fsm.logs import configure
from fsm.runner import run_from_config

DbOption = Annotated[
    str | None, typer.Option("--db", help="Database URL (default: $FSM_DB or sqlite:///fsm.db).")
]


def run(
    db: DbOption = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file: backends, intervals, lifecycles.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", min=1, max=65535, help="Serve Prometheus metrics here."),
    ] = None,
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="Stop once no non-terminal entity is left.")
    ] = False,
    worker_id: Annotated[
        str | None, typer.Option("--worker-id", help="Name of this worker (default: host:pid).")
    ] = None,
    lease_audit: Annotated[
        Path | None, typer.Option("--lease-audit", help="Append every lease to this JSONL file.")
    ] = None,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log JSON lines.")] = False,
    log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
) -> None:
    """Run a worker: refresh due entities through their backends, fire deadlines, run
    scheduled commands. Stops cleanly on SIGTERM/SIGINT."""
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    configure(json_lines=log_json, level=log_level)
    settings = load_config(config)
    code = run_from_config(
        settings,
        db=db,
        exit_when_idle=exit_when_idle,
        metrics_port=metrics_port,
        worker_id=worker_id,
        lease_audit=lease_audit,
    )
    raise typer.Exit(code)


def watch(
    db: DbOption = None,
    interval: Annotated[float, typer.Option("--interval", min=0.05)] = 0.5,
    since: Annotated[
        float, typer.Option("--since", min=0, help="Also show the last N seconds.")
    ] = 0.0,
    duration: Annotated[
        float | None, typer.Option("--for", min=0, help="Stop after N seconds.")
    ] = None,
) -> None:
    """Show transitions live, as workers record them."""
    console = Console(highlight=False, soft_wrap=True)
    engine = Engine.open_existing(db)
    after = datetime.now(UTC) - timedelta(seconds=since)
    seen: set[tuple[str, int]] = set()
    stop_at = time.monotonic() + duration if duration is not None else None
    colours = {
        "FAILED": "red",
        "TIMEOUT": "red",
        "TIMED_OUT": "red",
        "UNHEALTHY": "yellow",
        "HEALTHY": "green",
        "SUCCEEDED": "green",
        "STOPPED": "blue",
    }
    try:
        while stop_at is None or time.monotonic() < stop_at:
            rows = engine.store.transitions_since(after)
            for lifecycle, t in rows:
                if (t.entity_id, t.seq) in seen:
                    continue
                colour = colours.get(t.to_state, "white")
                console.print(
                    f"{t.recorded_at:%H:%M:%S.%f}"[:-3]
                    + f"  {lifecycle:<9} {t.entity_id:<24} {t.from_state:>12} → "
                    f"[{colour}]{t.to_state:<12}[/]  {t.event} ({t.source})"
                )
            if rows:
                after = max(t.recorded_at for _, t in rows)
                seen = {(t.entity_id, t.seq) for _, t in rows if t.recorded_at == after}
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        engine.close()
