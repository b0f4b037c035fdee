"""The runtime commands of the CLI: `fsm run` (a worker) and `fsm watch` (live transitions).

`fsm run` checks everything it can before it opens (and so creates) a database: the URL, the
config file with every backend's settings, the extra lifecycle definitions, the metrics port,
the worker id and the lease-audit path. A run that is refused leaves nothing behind.
"""

from __future__ import annotations

import errno
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from fsm.cli_support import (
    MAX_SECONDS,
    DbOption,
    UsageProblem,
    checked_url,
    finite,
    reading,
    reporting,
)
from fsm.config import RunConfig, config_lifecycles, load_config
from fsm.errors import FsmError
from fsm.logs import configure
from fsm.runner import run_from_config

_COLOURS = {
    "FAILED": "red",
    "TIMEOUT": "red",
    "TIMED_OUT": "red",
    "UNHEALTHY": "yellow",
    "HEALTHY": "green",
    "SUCCEEDED": "green",
    "STOPPED": "blue",
}


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
        raise typer.BadParameter(f"unknown log level {log_level[:40]!r}", param_hint="--log-level")
    if worker_id is not None and not (
        0 < len(worker_id) <= 100 and worker_id.isprintable() and worker_id.strip() == worker_id
    ):
        raise typer.BadParameter("must be 1 to 100 printable characters", param_hint="--worker-id")
    with reporting():
        settings = load_config(config)
        url = checked_url(db or settings.db)
        _check_lifecycles(settings)
        _check_lease_audit(lease_audit)
        if metrics_port is not None:
            _check_port_free(metrics_port)
        configure(json_lines=log_json, level=log_level)
        code = run_from_config(
            settings,
            db=url,
            exit_when_idle=exit_when_idle,
            metrics_port=metrics_port,
            worker_id=worker_id,
            lease_audit=lease_audit,
        )
    raise typer.Exit(code)


def _check_lifecycles(settings: RunConfig) -> None:
    config_lifecycles(settings)  # definitions and their guards, imported: refused before a db


def _check_lease_audit(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir():
        raise UsageProblem(f"--lease-audit {path} is a directory, not a file")
    if not path.parent.is_dir():
        raise UsageProblem(f"--lease-audit {path}: folder {path.parent} does not exist")


def _check_port_free(port: int) -> None:
    """The metrics server binds 127.0.0.1 (with SO_REUSEADDR): refuse a port someone holds
    before a database is opened, rather than fail after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used: {exc}"
            raise FsmError(f"metrics port {port} {reason}") from exc


def watch(
    db: DbOption = None,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, max=3600, callback=finite)
    ] = 0.5,
    since: Annotated[
        float,
        typer.Option(
            "--since", min=0, max=MAX_SECONDS, callback=finite, help="Also show the last N seconds."
        ),
    ] = 0.0,
    duration: Annotated[
        float | None,
        typer.Option(
            "--for", min=0, max=MAX_SECONDS, callback=finite, help="Stop after N seconds."
        ),
    ] = None,
) -> None:
    """Show transitions live, as workers record them."""
    out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
    with reporting(), reading(db) as engine:
        after = datetime.now(UTC) - timedelta(seconds=since)
        seen: set[tuple[str, int]] = set()
        stop_at = time.monotonic() + duration if duration is not None else None
        try:
            while stop_at is None or time.monotonic() < stop_at:
                rows = engine.store.transitions_since(after)
                for lifecycle, t in rows:
                    if (t.entity_id, t.seq) in seen:
                        continue
                    out.print(
                        Text.assemble(
                            f"{t.recorded_at:%H:%M:%S.%f}"[:-3],
                            f"  {lifecycle:<9} {t.entity_id:<24} {t.from_state:>12} → ",
                            (f"{t.to_state:<12}", _COLOURS.get(t.to_state, "white")),
                            f"  {t.event} ({t.source})",
                        )
                    )
                if rows:
                    after = max(t.recorded_at for _, t in rows)
                    seen = {(t.entity_id, t.seq) for _, t in rows if t.recorded_at == after}
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
